"""launch/studies.sh on a fresh machine: the committed runs of a study come back, and what it archives and reports
from them is what is committed, byte for byte (a study spread over several machines loses nothing on the way)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~30 s: 108 runs restored, archived and reported with figures
def test_archive_only_restores_a_committed_study_and_regenerates_it_byte_for_byte(tmp_path):
    study = "warmup_depth"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    repo = tmp_path / "repo"
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, repo / name)
    runs = tmp_path / "runs"
    env = {**os.environ, "RADAM_REPRO_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", "launch/studies.sh", "--archive-only", study],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"[studies] {study}: 108 of 108 cells ended" in proc.stdout
    restored = sorted(p.parent.name for p in (runs / study).glob("*/summary.json"))
    committed = sorted(p.parent.name for p in (ROOT / "results" / study / "runs").glob("*/summary.json"))
    assert restored == committed and len(restored) == 108
    for path in sorted((ROOT / "results" / study).rglob("*")):
        if path.is_file():
            again = repo / path.relative_to(ROOT)
            assert again.read_bytes() == path.read_bytes(), f"{path.relative_to(ROOT)} differs"
