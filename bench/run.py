"""Benchmarks of pytest-repoclones against raw git: one command, markdown tables on stdout.

    python bench/run.py                         # synthetic repo (~6,000 files, ~15 MB, 200 commits)
    python bench/run.py --repo small            # synthetic repo of ~100 files
    python bench/run.py --repo /path/to/repo    # any local repository, served over file://
    python bench/run.py --quick                 # smoke run (< 1 minute): 3 repetitions
    python bench/run.py --scenarios warm,cold --reps 20 --append bench/results-DATE.md
    python bench/run.py --plugin-rev HEAD       # the plugin as committed, not the working tree

Scenarios (bench/README.md): warm, cold, naive, parallel, disk, floor. The command lives in
cli.py and the scenarios in scenarios/; this launcher only swaps in a committed revision of the
plugin when asked, before anything imports it (others may be editing the working tree while a
run takes minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SNAPSHOT_ENV = "BENCH_PLUGIN_SNAPSHOT"


def snapshot_plugin(rev: str) -> tuple[Path, str]:
    """Extract ``pytest_repoclones/`` as committed at ``rev`` under bench/.work/plugin/."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = BENCH_DIR / ".work" / "plugin" / sha[:12]
    if not (target / "pytest_repoclones" / "__init__.py").is_file():
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha, "pytest_repoclones"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target, f"{rev} = {sha[:12]} (snapshot)"


def main() -> int:
    argv = sys.argv[1:]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin-rev")
    known, _ = pre.parse_known_args(argv)
    if known.plugin_rev and SNAPSHOT_ENV not in os.environ:
        path, label = snapshot_plugin(known.plugin_rev)
        # PYTHONPATH comes before the editable install's finder, here and in the pytest runs.
        paths = [str(path), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), **{SNAPSHOT_ENV: label})
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)
    import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
