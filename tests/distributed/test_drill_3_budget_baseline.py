"""(d) The budget drill's baseline: today's fixed per-process budget beside the adaptive one, in one run.

Two DAG runs at once, one key each: ``dist_budget_fixed`` (``adaptive_rate: false``: each of the two triggerers
polls at up to 50 per window, 100 against the key's 60) and ``dist_budget_adaptive`` (the default), measured as
test_drill_3_budget.py measures the adaptive one alone. ``-m slow``: 80 Airflow tasks, each started and resumed on
a worker, take about two minutes of the 2-core machine. Figures: test-artifacts/distributed-budget-baseline.json.
"""

from __future__ import annotations

import pytest

from tests.distributed.conftest import BUDGETS, Cluster
from tests.distributed.test_drill_3_budget import MAX_REFUSED_SHARE, RUNS, Outcome, measure

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def outcomes(cluster: Cluster) -> dict[str, Outcome]:
    return measure(cluster, BUDGETS, "distributed-budget-baseline.json")


def test_both_keys_were_polled_by_both_triggerers(outcomes: dict[str, Outcome]) -> None:
    assert {b: o.triggerers for b, o in outcomes.items()} == dict.fromkeys(BUDGETS, 2)


def test_the_adaptive_budget_meets_its_target_beside_the_fixed_one(outcomes: dict[str, Outcome]) -> None:
    adaptive = outcomes["adaptive"]
    assert adaptive.succeeded == RUNS and adaptive.starts == RUNS, adaptive
    assert adaptive.refused_share <= MAX_REFUSED_SHARE, adaptive


def test_adaptive_budget_is_refused_less_than_the_fixed_one(outcomes: dict[str, Outcome]) -> None:
    """The baseline in the same run: today's fixed per-process budget, two triggerers on one key."""
    assert outcomes["adaptive"].refused_share < outcomes["fixed"].refused_share, outcomes
