"""The provider info Airflow reads for the connection forms."""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
def test_only_secret_extras_have_names_airflow_masks(conn_type: str, name: str, field: dict[str, Any]) -> None:
    """An extra whose name Airflow counts as a secret (``auth_header``, ``..._token``, ...) is shown as "***" in
    the UI's edit form and the REST API: the user cannot see what they chose. Only password fields may."""
    is_secret = field["schema"].get("format") == "password"
    assert (_airflow_hides()(name) or name in SECRET_BY_CONTENT) == is_secret, f"{conn_type} extra {name!r}"


@pytest.mark.parametrize(("conn_type", "name", "field"), CONN_FIELDS, ids=[f"{c}.{n}" for c, n, _ in CONN_FIELDS])
def test_choices_are_named_for_the_dropdown(conn_type: str, name: str, field: dict[str, Any]) -> None:
    """A choice field names every value (the UI shows a bare ``null`` for the unset one otherwise)."""
    schema = field["schema"]
    if "enum" not in schema:
        return
    shown = schema.get("values_display", {})
    assert all(("null" if value is None else str(value)) in shown for value in schema["enum"]), (conn_type, name)


# -- the whole provider info, against Airflow's own schema ------------------------------------------------------
def _airflow_schema() -> dict[str, Any]:
    """``provider_info.schema.json`` as this Airflow ships it (apache-airflow-core 3.x keeps it beside
    ``providers_manager``; the providers manager validates every provider's info against it)."""
    import airflow

    path = Path(airflow.__file__).parent / "provider_info.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def test_provider_info_matches_airflows_schema() -> None:
    import jsonschema

    info = get_provider_info()
    jsonschema.validate(info, _airflow_schema())
    # The schema is loose where the providers manager is strict: these keys are the ones it reads.
    for decorator in info["task-decorators"]:
        assert set(decorator) == {"name", "class-name"}, decorator


def test_provider_info_covers_the_package() -> None:
    """Every section names what the package really has: each module and class imports, each
    hook/operator/sensor/trigger entry belongs to a declared integration, and no module is left out."""
    info = get_provider_info()
    integrations = {i["integration-name"] for i in info["integrations"]}
    assert integrations == {"Gumloop", "GloriaMundo", "Puffle"}
    assert all(i["external-doc-url"].startswith("https://") and i["tags"] for i in info["integrations"])
    package = Path(importlib.import_module("airflow_provider_runwatch").__file__ or "").parent
    for kind in ("hooks", "operators", "sensors", "triggers"):
        listed = [module for entry in info[kind] for module in entry["python-modules"]]
        assert {entry["integration-name"] for entry in info[kind]} <= integrations, kind
        on_disk = {
            f"airflow_provider_runwatch.{kind}.{p.stem}" for p in (package / kind).glob("*.py") if p.stem[0] != "_"
        } - {
            f"airflow_provider_runwatch.{kind}.{shared}"
            for shared in ("base", "batch", "lineage", "gumloop_shared", "gumloop_approvals")
        }
        assert set(listed) == on_disk, kind
        for module in listed:
            importlib.import_module(module)
    for path in info["extra-links"] + [d["class-name"] for d in info["task-decorators"]]:
        module, _, name = path.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), path
    assert [ct["hook-class-name"].rpartition(".")[0] for ct in info["connection-types"]] == [
        module for entry in info["hooks"] for module in entry["python-modules"]
    ]
