"""Fuzz the server's input handling with atheris (coverage-guided), each target for a bounded time.

    .venv/bin/python scripts/fuzz/run.py [--seconds 30] [--target sip_endpoint ...]

Each target runs in its own process (atheris instruments the imported modules), seeded with real
inputs from the repository. A crash or an undocumented exception stops that target and leaves the
input in ``fuzz-crashes/``; the exit status is non-zero when any target failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _child(name: str, seconds: int, corpus: Path, crashes: Path) -> int:
    import atheris

    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["callcenter"]):
        import targets  # noqa: F401 - the targets import callcenter lazily; instrument it all now

        import callcenter.chat.wechat.messages  # noqa: F401
        import callcenter.chat.wechat.xmlsafe  # noqa: F401
        import callcenter.ivr.loader  # noqa: F401
        import callcenter.media.rtcp  # noqa: F401
        import callcenter.media.rtp  # noqa: F401
        import callcenter.media.sdp  # noqa: F401
        import callcenter.sip.endpoint  # noqa: F401
        import callcenter.sip.parser  # noqa: F401
    target = targets.TARGETS[name]
    for i, seed in enumerate(targets.seeds(name)):
        (corpus / f"seed-{i}").write_bytes(seed)
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        "-max_len=4096",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={crashes}/{name}-",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, target)
    atheris.Fuzz()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=30, help="time per target")
    parser.add_argument("--target", action="append", help="a target name (default: all)")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import targets

    if args.child:
        with tempfile.TemporaryDirectory() as corpus:
            return _child(args.child, args.seconds, Path(corpus), args.crashes.resolve())
    names = args.target or list(targets.TARGETS)
    failed = []
    for name in names:
        if name not in targets.TARGETS:
            parser.error(f"unknown target {name!r}: {', '.join(targets.TARGETS)}")
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--seconds",
            str(args.seconds),
            "--crashes",
            str(args.crashes),
        ]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            timeout=args.seconds * 4 + 120,
        )
        runs = [ln for ln in proc.stderr.splitlines() if "stat::number_of_executed_units" in ln]
        execs = runs[-1].split(":")[-1].strip() if runs else "?"
        print(f"{name:14s} {'ok' if proc.returncode == 0 else 'FAILED'}  {execs} inputs in {args.seconds} s")
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-4000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
