"""What ``airflow providers ...`` shows of this package, from a real ``airflow`` CLI process (the one users run):
the entry point is found, the provider info passes Airflow's validation, and every hook, trigger module and
extra link it names imports in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

PACKAGE = "airflow-provider-runwatch"


def _airflow_providers(home: Path, what: str) -> list[dict[str, Any]]:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", what, "-o", "json"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


@pytest.fixture(scope="module")
def listings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    whats = ("list", "hooks", "triggers", "links")
    # Four CLI processes at once, each in its own AIRFLOW_HOME (each writes its airflow.cfg): each is mostly its
    # own start-up (~8 s); one after another they took 32 s.
    homes = [tmp_path_factory.mktemp(f"airflow-home-{what}") for what in whats]
    with ThreadPoolExecutor(len(whats)) as pool:
        return dict(zip(whats, pool.map(_airflow_providers, homes, whats), strict=True))


def test_providers_list_shows_the_package(listings: dict[str, list[dict[str, Any]]]) -> None:
    from airflow_provider_runwatch import __version__

    ours = [row for row in listings["list"] if row["package_name"] == PACKAGE]
    assert len(ours) == 1 and ours[0]["version"] == __version__, ours
    assert "Gumloop" in ours[0]["description"] and "Puffle" in ours[0]["description"]


def test_providers_hooks_lists_the_three_connection_types(listings: dict[str, list[dict[str, Any]]]) -> None:
    ours = {row["connection_type"]: row for row in listings["hooks"] if row["package_name"] == PACKAGE}
    assert {conn_type: row["class"] for conn_type, row in ours.items()} == {
        "gumloop": "airflow_provider_runwatch.hooks.gumloop.GumloopHook",
        "gloriamundo": "airflow_provider_runwatch.hooks.gloriamundo.GloriaMundoHook",
        "puffle": "airflow_provider_runwatch.hooks.puffle.PuffleHook",
    }
    assert {row["hook_name"] for row in ours.values()} == {"Gumloop", "GloriaMundo", "Puffle"}


def test_providers_triggers_lists_every_trigger_module(listings: dict[str, list[dict[str, Any]]]) -> None:
    ours = {row["class"]: row["integration_name"] for row in listings["triggers"] if row["package_name"] == PACKAGE}
    assert ours == {
        "airflow_provider_runwatch.triggers.gumloop": "Gumloop",
        "airflow_provider_runwatch.triggers.gloriamundo": "GloriaMundo",
        "airflow_provider_runwatch.triggers.puffle": "Puffle",
    }


def test_providers_links_lists_the_run_links(listings: dict[str, list[dict[str, Any]]]) -> None:
    # Airflow lists a link only after importing it and checking it is a BaseOperatorLink.
    names = {row["extra_link_class_name"] for row in listings["links"]}
    assert {"airflow_provider_runwatch.links.RunLink", "airflow_provider_runwatch.links.GumloopRunLink"} <= names
