"""The scenarios of ``python bench/run.py`` (bench/README.md), one module each: a function that
takes the run's context, measures, and returns its markdown section."""

from __future__ import annotations

from collections.abc import Callable

from common import Context

from scenarios.cold import scenario_cold
from scenarios.disk import scenario_disk
from scenarios.floor import scenario_floor
from scenarios.naive import scenario_naive
from scenarios.parallel import scenario_parallel
from scenarios.warm import scenario_warm

SCENARIOS: dict[str, Callable[[Context], str]] = {
    "warm": scenario_warm,
    "cold": scenario_cold,
    "naive": scenario_naive,
    "parallel": scenario_parallel,
    "disk": scenario_disk,
    "floor": scenario_floor,
}
ALL_SCENARIOS = tuple(SCENARIOS)
