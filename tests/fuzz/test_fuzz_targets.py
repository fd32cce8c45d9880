"""The fuzz targets of scripts/fuzz: every seed passes, then atheris (coverage-guided) hammers each
target for a bounded time in its own process; a crash or an undocumented exception fails the test and
leaves the input in the test's temporary folder (printed)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "fuzz"))

import targets  # noqa: E402

SECONDS = int(os.environ.get("CALLCENTER_FUZZ_SECONDS", "10"))
Run = tuple[subprocess.CompletedProcess[str], Path]  # the fuzzer's process, and its crash inputs folder


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_every_seed_goes_through(name: str) -> None:
    seeds = list(targets.seeds(name))
    assert seeds, f"{name} has no seed corpus"
    for seed in seeds:
        targets.TARGETS[name](seed)


@pytest.fixture(scope="module")
def fuzz_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every target fuzzed for SECONDS, two processes at a time (one per core: fuzzing is CPU-bound and
    the targets are independent), so the six cost the time of three."""
    pytest.importorskip("atheris")
    run = ROOT / "scripts" / "fuzz" / "run.py"

    def fuzz(name: str) -> Run:
        crashes = tmp_path_factory.mktemp(f"crashes-{name}")
        cmd = [sys.executable, str(run), "--target", name, "--seconds", str(SECONDS)]
        cmd += ["--crashes", str(crashes)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS * 4 + 120, cwd=ROOT)
        return proc, crashes

    names = sorted(targets.TARGETS)
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        return dict(zip(names, pool.map(fuzz, names), strict=True))


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_the_target_survives_coverage_guided_fuzzing(name: str, fuzz_runs: dict[str, Run]) -> None:
    proc, crashes = fuzz_runs[name]
    found = sorted(p.name for p in crashes.iterdir())
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}\ncrash inputs in {crashes}: {found}"
