"""Operator extra links: "View run on <vendor>" from the ``run_url`` XCom pushed before waiting."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.bases.xcom import BaseXCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class RunLink(BaseOperatorLink):
    """Link to the run in the vendor's app; empty until the run has started (or when none exists)."""

    name: ClassVar[str] = "View run"  # type: ignore[misc]

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = BaseXCom.get_value(ti_key=ti_key, key="run_url")  # type: ignore[arg-type]
        return url if isinstance(url, str) else ""


class GumloopRunLink(RunLink):
    """Link to a Gumloop flow run: the ``url`` Gumloop returned when the run was started."""

    name = "View run on Gumloop"
