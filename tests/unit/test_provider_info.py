"""The provider info Airflow reads for the connection forms."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

import pytest

from airflow_provider_runwatch import get_provider_info


def _airflow_hides() -> Callable[[str], bool]:
    """Airflow's own rule for which field names hold secrets (its module moved between versions)."""
    for module in ("airflow.sdk._shared.secrets_masker", "airflow.sdk.execution_time.secrets_masker"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                hides: Callable[[str], bool] = importlib.import_module(module).should_hide_value_for_key
            except (ImportError, AttributeError):
                continue
        return hides
    pytest.skip("this Airflow has no should_hide_value_for_key")


#: Extras that hold a secret by their content although an older Airflow does not count their names as secret
#: ("proxies" carries the proxy password; Airflow 3.3 hides it by name, 3.1 does not).
SECRET_BY_CONTENT = frozenset({"proxies"})

CONN_FIELDS = [
    (ct["connection-type"], name, field)
    for ct in get_provider_info()["connection-types"]
    for name, field in ct.get("conn-fields", {}).items()
]


@pytest.mark.parametrize(("conn_type", "name", "field"), CONN_FIELDS, ids=[f"{c}.{n}" for c, n, _ in CONN_FIELDS])
def test_only_secret_extras_have_names_airflow_masks(conn_type: str, name: str, field: dict) -> None:
    """An extra whose name Airflow counts as a secret (``auth_header``, ``..._token``, ...) is shown as "***" in
    the UI's edit form and the REST API: the user cannot see what they chose. Only password fields may."""
    is_secret = field["schema"].get("format") == "password"
    assert (_airflow_hides()(name) or name in SECRET_BY_CONTENT) == is_secret, f"{conn_type} extra {name!r}"


@pytest.mark.parametrize(("conn_type", "name", "field"), CONN_FIELDS, ids=[f"{c}.{n}" for c, n, _ in CONN_FIELDS])
def test_choices_are_named_for_the_dropdown(conn_type: str, name: str, field: dict) -> None:
    """A choice field names every value (the UI shows a bare ``null`` for the unset one otherwise)."""
    schema = field["schema"]
    if "enum" not in schema:
        return
    shown = schema.get("values_display", {})
    assert all(("null" if value is None else str(value)) in shown for value in schema["enum"]), (conn_type, name)
