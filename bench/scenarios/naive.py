"""Scenario 3, naive: what users replace, a fresh ``git clone`` per test, against ours per test
on an empty cache (a first run) and on a kept one (a later run)."""

from __future__ import annotations

from common import Context, Samples, git, interleave, log, perf, rmtree
from report import fmt_ratio, fmt_s, table

from pytest_repoclones import RepoStore

KEYS = ("ours cold", "ours cold create", "ours warm", "ours warm create", "naive", "naive create")


def time_naive(ctx: Context, commits: list[str]) -> dict[str, Samples]:
    """Interleaved repetitions of the three sides, each a test per commit in ``commits``."""
    url = ctx.up.url
    samples = {k: Samples() for k in KEYS}
    warm_cache = ctx.dir("naive-warm-cache")
    RepoStore(warm_cache).clone(url)

    def run_ours(store: RepoStore, i: int) -> tuple[float, float]:
        create = 0.0
        t0 = perf()
        for n, commit in enumerate(commits):
            t = perf()
            worktree = store.add_worktree(url, commit, ctx.dir(f"naive-ours-{i}-{n}"))
            create += perf() - t
            store.remove_worktree(worktree)
        return perf() - t0, create

    def ours_cold(i: int) -> None:
        cache = ctx.dir(f"naive-cache-{i}")
        total, create = run_ours(RepoStore(cache), i)
        rmtree(cache)
        if i >= 0:
            samples["ours cold"].add(total)
            samples["ours cold create"].add(create)

    def ours_warm(i: int) -> None:
        # A new store per repetition: a later pytest session on a populated cache.
        total, create = run_ours(RepoStore(warm_cache), i)
        if i >= 0:
            samples["ours warm"].add(total)
            samples["ours warm create"].add(create)

    def naive(i: int) -> None:
        create = 0.0
        t0 = perf()
        for n, commit in enumerate(commits):
            path = ctx.dir(f"naive-clone-{i}-{n}")
            t = perf()
            git("clone", "-q", url, path)
            git("-C", path, "checkout", "-q", "--detach", commit)
            create += perf() - t
            rmtree(path)
        if i >= 0:
            samples["naive"].add(perf() - t0)
            samples["naive create"].add(create)

    log(
        f"naive: {ctx.heavy_warmup} warm-up + {ctx.reps} repetitions of {len(commits)} tests "
        "per side"
    )
    interleave(ctx.reps, ctx.heavy_warmup, [ours_cold, ours_warm, naive])
    return samples


def naive_rows(samples: dict[str, Samples]) -> list[list[str]]:
    rows = []
    for label, key in (
        ("first run (empty cache)", "ours cold"),
        ("later runs (cache kept)", "ours warm"),
    ):
        for suffix, what in (("", "create + delete"), (" create", "create only")):
            ours_s, naive_s = samples[key + suffix], samples["naive" + suffix]
            rows.append(
                [
                    f"{label}, {what}",
                    fmt_s(ours_s.median),
                    fmt_s(ours_s.min),
                    fmt_s(naive_s.median),
                    fmt_s(naive_s.min),
                    fmt_ratio(ours_s.median, naive_s.median),
                    f"{naive_s.median / ours_s.median:.1f}x",
                ]
            )
    return rows


def scenario_naive(ctx: Context) -> str:
    commits = ctx.up.spread(ctx.naive_tests)
    samples = time_naive(ctx, commits)
    ctx.results["naive"] = samples
    return "\n".join(
        [
            f"### 3. Naive: a fresh `git clone` per test, {len(commits)} tests at "
            f"{len(set(commits))} commits",
            "",
            "Ours: `add_worktree` + `remove_worktree` per test (one clone into the cache on the "
            "first run). Naive: `git clone URL P` + `git -C P checkout --detach SHA` per test, "
            "then `shutil.rmtree(P)` (what pytest's tmp_path cleanup does).",
            "",
            table(
                (
                    f"{len(commits)} tests",
                    "ours median",
                    "ours min",
                    "naive median",
                    "naive min",
                    "ours/naive",
                    "speed-up",
                ),
                naive_rows(samples),
            ),
        ]
    )
