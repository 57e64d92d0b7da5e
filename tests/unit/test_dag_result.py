"""The secret check every DAG test gets from ``dag_runner`` (tests/conftest.py) is one that can fail."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import SECRET_KEY, DagResult


@pytest.mark.parametrize(
    ("output", "xcoms", "where"),
    [
        (f"log line with {SECRET_KEY}", {}, "output"),
        ("", {("t", "run"): {"error": f"Bearer {SECRET_KEY}"}}, "XCom ('t', 'run')"),
    ],
)
def test_every_dag_runs_secret_check_can_fail(output: str, xcoms: dict[tuple[str, str], Any], where: str) -> None:
    """``dag_runner`` checks every DAG run with ``check_no_secret``; it catches a key in logs and in XCom."""
    result = DagResult("run_1", "success", {}, xcoms, output)
    with pytest.raises(AssertionError, match=re.escape(where)):
        result.check_no_secret()
    DagResult("run_1", "success", {}, {("t", "run"): {"error": "redacted"}}, "clean").check_no_secret()
