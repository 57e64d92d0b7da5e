"""What the three TaskFlow decorators share: call the decorated function on the worker, put what it returns where
the operator expects its message or input, then run the operator unchanged.

Everything after that call is the operator's own ``execute``: the run is started and recorded (``run_id`` XCom,
``task_state_store``), the wait defers to the triggerer, ``execute_complete`` resumes without calling the function
again, and the answer, ``messages`` and ``run`` XComs are the operator's. A retry calls the function again (its
value is not stored) and then reattaches to the earlier try's run as the operator does; so does the resume after a
start the vendor refused for capacity (start admission), which starts again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import context_merge

from airflow_provider_runwatch.core.errors import ConfigurationError

try:  # Airflow >= 3.2
    from airflow.sdk.bases.decorator import determine_kwargs  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # Airflow 3.1
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef,attr-defined,unused-ignore]

if TYPE_CHECKING:
    from airflow.sdk import Context


class RunDecoratedOperator(DecoratedOperator):
    """Mixed in before a run operator: ``field`` is filled from the function's return value at execution."""

    #: The operator argument the function's return value becomes (``message``, ``input``).
    field: ClassVar[str]
    #: What the function must return, for the error message.
    expected: ClassVar[str]
    #: ``@task.<name>``: how Airflow shows the task, and how errors name it.
    custom_operator_name: str
    # The rendered-fields view shows the value the function returned, not the placeholder.
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.field in kwargs:
            raise ConfigurationError(
                f"{self.custom_operator_name}: the function returns the {self.field}; do not pass {self.field}="
            )
        kwargs[self.field] = SET_DURING_EXECUTION
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)

    def execute(self, context: Context) -> Any:
        self.fill(context)
        return super().execute(context)

    def before_admitted_start(self, context: Context) -> None:
        """The resume after a refused start's timer starts again, so the function runs again (its value is not
        stored in the deferral: it may be large, or private)."""
        self.fill(context)

    def fill(self, context: Context) -> None:
        """Call the function and put its (checked) value where the operator reads its message or input."""
        context_merge(context, self.op_kwargs)
        value = self.python_callable(*self.op_args, **determine_kwargs(self.python_callable, self.op_args, context))
        # Not rendered as a template: a message may well contain "{{" (the function's arguments already were).
        setattr(self, self.field, self.check_value(value))

    def check_value(self, value: Any) -> Any:
        """Refuse a return value the operator could not send, naming the decorator and what it needs."""
        if not self.accepts(value):
            raise TypeError(
                f"{self.custom_operator_name}: the decorated function must return {self.expected}, "
                f"got {type(value).__name__}"
            )
        return value

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())
