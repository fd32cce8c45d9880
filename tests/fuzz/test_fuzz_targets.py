"""The fuzz targets of scripts/fuzz: every seed passes, then atheris (coverage-guided) hammers each
target for a bounded time in its own process; a crash or an undocumented exception fails the test and
leaves the input in the test's temporary folder (printed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "fuzz"))

import targets  # noqa: E402

SECONDS = int(os.environ.get("CALLCENTER_FUZZ_SECONDS", "10"))


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_every_seed_goes_through(name: str) -> None:
    seeds = list(targets.seeds(name))
    assert seeds, f"{name} has no seed corpus"
    for seed in seeds:
        targets.TARGETS[name](seed)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_the_target_survives_coverage_guided_fuzzing(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    run = ROOT / "scripts" / "fuzz" / "run.py"
    cmd = [sys.executable, str(run), "--target", name, "--seconds", str(SECONDS), "--crashes", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS * 4 + 120, cwd=ROOT)
    found = sorted(p.name for p in tmp_path.iterdir())
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}\ncrash inputs in {tmp_path}: {found}"
