"""``python -m radam_repro optimizer=radam task=nmt [seed=3] [-m ...]``: compose the config, run one cell."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from radam_repro.config import register
from radam_repro.errors import UserError


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
    from radam_repro.train import preflight, train

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        preflight(cfg)
    except UserError:
        remove_unstarted(out_dir, Path(cfg.run_root))
        raise
    return train(cfg, out_dir)


def remove_unstarted(out_dir: Path, run_root: Path) -> None:
    """Remove the folder Hydra made for a run that never started (only Hydra's ``.hydra/`` and log inside), then
    its empty parents below ``run_root``: a config or data error leaves no run folder behind."""
    if not out_dir.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in out_dir.iterdir()):
        return  # an earlier run's folder: not ours to touch
    shutil.rmtree(out_dir)
    root = run_root.resolve()
    for parent in out_dir.resolve().parents:
        if parent == root or root not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


if __name__ == "__main__":
    main()
