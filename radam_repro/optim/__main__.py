"""``python -m radam_repro.optim --list``: the registered algorithms and the config variants built on them."""

from __future__ import annotations

import argparse
from importlib import resources

import yaml

from radam_repro.optim.registry import OPTIMIZERS


def variants() -> list[tuple[str, str, str]]:
    """(``optimizer=`` choice, algorithm, first comment line) for every ``configs/optimizer/*.yaml``."""
    out = []
    for path in sorted(resources.files("radam_repro").joinpath("configs", "optimizer").iterdir()):
        if path.name.endswith(".yaml"):
            text = path.read_text()
            schema = next((d for d in (yaml.safe_load(text) or {}).get("defaults", []) if str(d).startswith("_")), "")
            comment = next((line.lstrip("# ") for line in text.splitlines() if line.startswith("#")), "")
            out.append((path.name.removesuffix(".yaml"), str(schema).lstrip("_"), comment))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m radam_repro.optim", description=__doc__)
    parser.add_argument("--list", action="store_true", help="list algorithms and config variants (the default)")
    parser.parse_args()
    print("algorithms (optimizer.algorithm):")
    for info in OPTIMIZERS.values():
        print(f"  {info.name:18s} {info.cls.__module__}.{info.cls.__name__}: {info.description}")
        print("  " + " " * 18 + " " + ", ".join(f"{hp.name}={hp.default!r}" for hp in info.hyperparameters))
    print("\nvariants (optimizer=<name>):")
    for name, algorithm, comment in variants():
        print(f"  {name:26s} [{algorithm}] {comment}")


if __name__ == "__main__":
    main()
