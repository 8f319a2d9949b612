"""What the plugin adds to the start of every pytest process: a one-test suite, plugin on
against ``-p no:repoclones``, interleaved, with and without bytecode written (containers often
set PYTHONDONTWRITEBYTECODE=1, and then every module is compiled again in every process).

    python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(suite: Path, extra: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *extra],
        cwd=suite,
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp)
        (suite / "test_trivial.py").write_text("def test_a():\n    assert 1\n")
        no_pyc = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        for label, env in (("no bytecode written", no_pyc), ("bytecode cached", cached)):
            _run(suite, [], env), _run(suite, ["-p", "no:repoclones"], env)  # warm-up
            on, off = [], []
            for _ in range(runs):
                on.append(_run(suite, [], env))
                off.append(_run(suite, ["-p", "no:repoclones"], env))
            on_ms, off_ms = statistics.median(on) * 1000, statistics.median(off) * 1000
            print(
                f"{label}: plugin on {on_ms:.0f} ms, off {off_ms:.0f} ms, "
                f"difference {on_ms - off_ms:.0f} ms (medians of {runs}, interleaved)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
