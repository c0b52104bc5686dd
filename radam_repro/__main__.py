"""``python -m radam_repro optimizer=radam task=nmt [seed=3] [-m ...]``: compose the config, run one cell."""

from __future__ import annotations

import hashlib
import re

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from radam_repro.config import register


def run_name(override_dirname: str) -> str:
    """A folder name from the overrides that define a run: readable, filesystem-safe, unique."""
    if not override_dirname:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", override_dirname)
    if safe != override_dirname or len(safe) > 120:
        safe = f"{safe[:100]}-{hashlib.sha1(override_dirname.encode()).hexdigest()[:8]}"
    return safe


register()
OmegaConf.register_new_resolver("run_name", run_name, replace=True)


@hydra.main(version_base="1.3", config_path="configs", config_name="radam_repro")
def main(cfg: DictConfig) -> dict:
    from radam_repro.train import train

    return train(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
