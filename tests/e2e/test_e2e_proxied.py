"""E2E drill: the worker and the triggerer behind an authenticating egress proxy, the vendor over https with a
private CA, everything from the environment (HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE; see tests/e2e/conftest.py).

e2e_proxied runs on its own, not with the happy runs: in their burst its task starts lengthened the triggerer's
stall under load (38-40 s against 31 s) and failed the timing-bound Puffle and GloriaMundo log checks. Then:
every task succeeded with the answer the https emulator itself gives for its run; every request that emulator
received came from the proxy's outgoing address (its request log records the TCP peer; tinyproxy binds its
outgoing connections to PROXY_SOURCE, and a direct request is logged from 127.0.0.1, which the control check
shows), and the proxy's own log shows the CONNECT tunnels to it and nothing else; neither the API key nor the
proxy password is in any component log, the proxy's log, a task log (on disk or through the REST API) or an XCom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.deployment import EMULATOR_USER, SECRET_KEY, START_PATHS, Deployment
from tests.e2e.conftest import PROXY_SOURCE, Egress
from tests.e2e.dags.e2e_proxied import SUBJECTS, TASKS
from tests.network.fixtures import PROXY_PASSWORD

pytestmark = pytest.mark.e2e

DAG_ID = "e2e_proxied"


@dataclass(frozen=True)
class Drill:
    dag_run_id: str
    run_ids: dict[str, str]  # task id -> vendor run id
    served: list[dict[str, Any]]  # the https emulator's request log once the DAG run was over
    tunnels: list[str]  # the request lines in the proxy's own log by then


@pytest.fixture(scope="module")
def drill(deployment: Deployment, egress: Egress) -> Drill:
    """The finished run, and what the vendor and the proxy saw of it, read before this module's own (direct)
    requests to the https emulator."""
    dag_run_id = deployment.trigger(DAG_ID)
    run = deployment.wait_for(DAG_ID, dag_run_id, timeout=240)
    assert run["state"] == "success", deployment.explain(DAG_ID, dag_run_id)
    served = egress.emulator.requests()
    tunnels = egress.proxy.requests_since(0)
    run_ids = {task_id: deployment.xcom(DAG_ID, dag_run_id, task_id, "run_id") for task_id in TASKS}
    return Drill(dag_run_id, run_ids, served, tunnels)


def test_every_task_succeeded_with_the_vendors_answer(deployment: Deployment, egress: Egress, drill: Drill) -> None:
    states = {task_id: ti["state"] for task_id, ti in deployment.task_instances(DAG_ID, drill.dag_run_id).items()}
    assert states == dict.fromkeys(TASKS, "success")
    assert len(set(drill.run_ids.values())) == len(TASKS)
    for task_id, kind in TASKS.items():
        run_id = drill.run_ids[task_id]
        answer = deployment.xcom(DAG_ID, drill.dag_run_id, task_id)
        assert answer == deployment.vendor_answer(kind, run_id, egress.emulator), task_id
        assert SUBJECTS[kind] in str(answer), (task_id, answer)
        # Started once at the https vendor, and polled there (by the triggerer, or the worker when blocking).
        mine = [r for r in drill.served if r["run_id"] == run_id]
        starts = [r for r in mine if r["method"] == "POST" and r["path"].startswith(START_PATHS[kind])]
        assert len(starts) == 1, (task_id, mine)
        assert any(r["method"] == "GET" for r in mine), (task_id, mine)
    assert any(t.startswith("blocking__") for t in TASKS) and any(t.startswith("deferred__") for t in TASKS)


def test_the_vendor_was_reached_only_through_the_proxy(egress: Egress, drill: Drill) -> None:
    # Every request the https emulator received came out of the proxy: starts and blocking polls (worker),
    # deferred polls (triggerer).
    assert drill.served, "the https emulator received nothing"
    assert {r["peer"] for r in drill.served} == {PROXY_SOURCE}, [r for r in drill.served if r["peer"] != PROXY_SOURCE]
    assert all(r["authorized"] for r in drill.served)
    # The proxy's own log: CONNECT tunnels to the connections' origin, and nothing else went through it (the
    # execution API and the plain-http connections stayed direct, by NO_PROXY and by scheme).
    origin = egress.origin.removeprefix("https://")
    assert drill.tunnels, egress.proxy.log()[-3000:]
    assert set(drill.tunnels) == {f"CONNECT {origin} HTTP/1.1"}, drill.tunnels
    assert f"Bound to {PROXY_SOURCE}" in egress.proxy.log()
    # Control: a request that does not take the proxy is logged with its own peer, so the check above can fail.
    last = max(r["seq"] for r in drill.served)
    r = httpx.get(
        f"{egress.emulator.puffle_url}/api/agent/chat/{drill.run_ids['deferred__puffle']}",
        headers={"Authorization": f"Bearer {SECRET_KEY}", "x-auth-key": EMULATOR_USER},
        verify=egress.emulator.client_context or True,
        timeout=30,
    )
    r.raise_for_status()
    direct = [e for e in egress.emulator.requests(vendor="puffle", method="GET") if e["seq"] > last]
    assert direct and direct[-1]["peer"] == "127.0.0.1", direct


def test_no_secret_in_any_log_or_xcom(deployment: Deployment, egress: Egress, drill: Drill) -> None:
    texts = {f"component log {name}": deployment.logs(name) for name in deployment.starts}
    texts["proxy log"] = egress.proxy.log()
    for path in sorted((deployment.home / "logs").rglob("*")):
        if path.is_file():
            texts[f"task log file {path.relative_to(deployment.home)}"] = path.read_text(errors="replace")
    with deployment.api() as c:
        for task_id in TASKS:
            texts[f"REST task log {task_id}"] = deployment.task_log(DAG_ID, drill.dag_run_id, task_id)
            r = c.get(f"/dags/{DAG_ID}/dagRuns/{drill.dag_run_id}/taskInstances/{task_id}/xcomEntries")
            r.raise_for_status()
            for entry in r.json()["xcom_entries"]:
                value = deployment.xcom(DAG_ID, drill.dag_run_id, task_id, entry["key"])
                texts[f"XCom {task_id}.{entry['key']}"] = repr(value)
    assert any(name.startswith("task log file") and DAG_ID in name for name in texts), sorted(texts)
    for secret in (SECRET_KEY, PROXY_PASSWORD):
        leaks = [name for name, text in texts.items() if secret in text]
        assert not leaks, f"{secret[:8]}... found in {leaks}"
