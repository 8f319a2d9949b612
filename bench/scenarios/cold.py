"""Scenario 2, cold: the first worktree of a URL (the clone included), ours against
``git clone --bare`` + ``git worktree add``; and the plugin's git calls on the cold path."""

from __future__ import annotations

from common import Context, Samples, git, interleave, log, perf, rmtree
from probe import Probe
from report import COMPARE_HEADERS, compare_rows, fmt_mib, fmt_s, table

from pytest_repoclones import RepoStore


def time_cold(ctx: Context) -> dict[str, Samples]:
    """Interleaved repetitions of both sides: clone + first worktree, and the clone alone."""
    url, sha = ctx.up.url, ctx.up.head
    samples = {k: Samples() for k in ("ours", "raw", "ours clone", "raw clone")}

    def ours(i: int) -> None:
        cache, path = ctx.dir(f"cold-cache-{i}"), ctx.dir(f"cold-ours-{i}")
        store = RepoStore(cache)
        t0 = perf()
        worktree = store.add_worktree(url, sha, path)
        t1 = perf()
        store.remove_worktree(worktree)
        rmtree(cache)
        cache = ctx.dir(f"cold-cache-clone-{i}")
        t2 = perf()
        RepoStore(cache).clone(url)
        t3 = perf()
        rmtree(cache)
        if i >= 0:
            samples["ours"].add(t1 - t0)
            samples["ours clone"].add(t3 - t2)

    def raw(i: int) -> None:
        bare, path = ctx.dir(f"cold-raw-{i}.git"), ctx.dir(f"cold-raw-wt-{i}")
        t0 = perf()
        git("clone", "-q", "--bare", url, bare)
        git("-C", bare, "worktree", "add", "-q", "-b", "bench", path, sha)
        t1 = perf()
        rmtree(path)
        rmtree(bare)
        bare = ctx.dir(f"cold-raw-clone-{i}.git")
        t2 = perf()
        git("clone", "-q", "--bare", url, bare)
        t3 = perf()
        rmtree(bare)
        if i >= 0:
            samples["raw"].add(t1 - t0)
            samples["raw clone"].add(t3 - t2)

    log(f"cold: {ctx.warmup} warm-up + {ctx.reps} repetitions per side")
    interleave(ctx.reps, ctx.warmup, [ours, raw])
    return samples


def probe_cold(ctx: Context) -> tuple[dict[str, Samples], dict[str, int]]:
    """Where the cold path's time goes: per phase, and the git calls of one run by label."""
    url, sha = ctx.up.url, ctx.up.head
    phases: dict[str, Samples] = {}
    counts: dict[str, int] = {}
    with Probe(ctx.scratch / "probe") as probe:
        for i in range(min(ctx.probe_reps, 5)):
            probe.reset()
            cache, path = ctx.dir("cold-probe-cache"), ctx.dir("cold-probe-wt")
            store = RepoStore(cache)
            store.remove_worktree(store.add_worktree(url, sha, path))
            # The removal is not part of the cold path: drop what it added.
            for label in ("git update-ref", "rmtree worktree files", "rmtree admin dir"):
                probe.phases.pop(label, None)
            for label, seconds in probe.phases.items():
                phases.setdefault(label, Samples()).add(seconds)
            if i == 0:
                for label, _, _ in probe.calls:
                    counts[label] = counts.get(label, 0) + 1
            rmtree(cache)
    return phases, counts


def scenario_cold(ctx: Context) -> str:
    samples = time_cold(ctx)
    ctx.results["cold"] = samples
    phases, counts = probe_cold(ctx)
    return "\n".join(
        [
            f"### 2. Cold: first worktree of a new URL ({fmt_mib(ctx.up.pack_bytes)} packed)",
            "",
            "Ours: a `RepoStore` on an empty cache dir, `add_worktree(url, sha, path)`. Raw: "
            "`git clone --bare URL B` + `git -C B worktree add -b bench P SHA`.",
            "",
            table(
                COMPARE_HEADERS,
                compare_rows(
                    [
                        ("**clone + first worktree**", samples["ours"], samples["raw"]),
                        (
                            "clone only (`store.clone` / `clone --bare`)",
                            samples["ours clone"],
                            samples["raw clone"],
                        ),
                    ]
                ),
            ),
            "",
            "Where our cold add_worktree time goes (medians, instrumented runs; git calls "
            "per run in brackets):",
            "",
            table(
                ("phase", "median", "min"),
                [
                    [
                        f"{label} [{counts[label]}]" if label in counts else label,
                        fmt_s(s.median),
                        fmt_s(s.min),
                    ]
                    for label, s in phases.items()
                ],
            ),
        ]
    )
