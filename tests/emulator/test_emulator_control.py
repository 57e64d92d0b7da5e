"""The ``/_emulator`` control API: request log, run records, forced completion, default scenario, reset."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import httpx
    from tests.emulator.conftest import PuffleClient

    from airflow_provider_runwatch.emulator.server import EmulatorServer

OTHER_KEY = "pk_live_emulator_test_other_key_9876543210"


def test_health(http: httpx.Client) -> None:
    response = http.get("/_emulator/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_request_log_entries_and_filters(puffle: PuffleClient, http: httpx.Client) -> None:
    run_a = puffle.start_run("a")
    run_b = puffle.start_run("b", key=OTHER_KEY)
    puffle.poll(run_a)
    puffle.poll(run_b)  # not ours: 404, still logged with the run id
    puffle.poll("nonsense")
    http.get("/api/v1/unknown", params={"x": "1"})
    http.get("/_emulator/runs")  # control calls are not logged

    entries = http.get("/_emulator/requests").json()["requests"]
    assert [(e["method"], e["status"]) for e in entries] == [
        ("POST", 202),
        ("POST", 202),
        ("GET", 200),
        ("GET", 404),
        ("GET", 400),
        ("GET", 404),
    ]
    first = entries[0]
    assert set(first) == {"seq", "ts", "method", "path", "query", "status", "vendor", "run_id", "authorized", "peer"}
    assert first["peer"] == "127.0.0.1"  # the TCP peer: this test's client, connected directly
    assert first["path"] == "/api/agent/chat"
    assert first["vendor"] == "puffle"
    assert first["run_id"] == run_a
    assert first["authorized"] is True
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    unknown = entries[-1]
    assert unknown["vendor"] is None
    assert unknown["authorized"] is False
    assert unknown["query"] == {"x": "1"}

    def ask(**params: str) -> list[dict[str, object]]:
        result: list[dict[str, object]] = http.get("/_emulator/requests", params=params).json()["requests"]
        return result

    assert len(ask(vendor="puffle")) == 5
    assert len(ask(method="get")) == 4
    assert len(ask(path_prefix="/api/v1/")) == 1
    assert [e["method"] for e in ask(run_id=run_a)] == ["POST", "GET"]
    assert [e["status"] for e in ask(run_id=run_b, method="GET")] == [404]
    assert [e["seq"] for e in ask(after=str(entries[3]["seq"]))] == [e["seq"] for e in entries[4:]]


def test_unauthorized_requests_are_logged_as_such(puffle: PuffleClient, http: httpx.Client) -> None:
    http.post("/api/agent/chat", json={"message": "x"})
    http.post("/api/agent/chat", json={"message": "x"}, headers={"Authorization": "Bearer pk_user_1"})
    assert [(e["status"], e["authorized"]) for e in http.get("/_emulator/requests").json()["requests"]] == [
        (401, False),
        (403, False),
    ]


def test_log_never_contains_the_key(puffle: PuffleClient, http: httpx.Client) -> None:
    key = puffle.key
    run_id = puffle.start_run("x [emulator: polls=0]")
    puffle.poll(run_id)
    puffle.start("x", sync=True)
    # a key in the query string (Gumloop's legacy ?api_key=) and in odd places
    http.get(f"/api/v1/agent_status/x?api_key={key}&user_id=u1", headers=puffle.auth())
    http.get(f"/api/agent/chat/{run_id}", params={"token": key}, headers=puffle.auth())
    http.post("/api/agent/chat", content=b"{}", headers=puffle.auth())
    entries = http.get("/_emulator/requests").json()["requests"]
    assert len(entries) == 6
    dumped = json.dumps(entries)
    assert key not in dumped
    for entry in entries:
        for value in entry.values():
            assert key not in json.dumps(value)
    assert entries[3]["query"] == {"api_key": "[redacted]", "user_id": "u1"}
    record = http.get(f"/_emulator/runs/{run_id}").text
    assert key not in record


def test_clear_requests(puffle: PuffleClient, http: httpx.Client, emulator: EmulatorServer) -> None:
    puffle.start_run()
    assert http.delete("/_emulator/requests").json() == {"ok": True}
    assert http.get("/_emulator/requests").json() == {"requests": []}
    puffle.start_run()
    emulator.clear_requests()
    assert emulator.requests() == []


def test_run_record(puffle: PuffleClient, http: httpx.Client) -> None:
    run_id = puffle.start_run("Acme Corp [emulator: polls=2 queued=1]")
    record = http.get(f"/_emulator/runs/{run_id}").json()
    assert record["id"] == run_id
    assert record["vendor"] == "puffle"
    assert record["state"] == "queued"
    assert record["polls_answered"] == 0
    assert record["scenario"]["polls"] == 2
    assert record["scenario"]["queued"] == 1
    assert record["created_at"].endswith("Z")
    assert record["cancel_requested_at"] is None
    assert record["forced_outcome"] is None
    assert record["data"]["prompt"] == "Acme Corp"
    assert len(record["owner"]) == 64
    puffle.statuses(run_id, 2)
    after = http.get(f"/_emulator/runs/{run_id}").json()
    assert (after["state"], after["polls_answered"], after["terminal"]) == ("completed", 2, True)
    missing = http.get("/_emulator/runs/run_000000000000000000000000")
    assert missing.status_code == 404


def test_complete_takes_effect_on_next_poll(puffle: PuffleClient, http: httpx.Client) -> None:
    run_id = puffle.start_run("x [emulator: polls=never http5xx=3]")
    response = http.post(f"/_emulator/runs/{run_id}/complete")
    assert response.status_code == 200
    assert response.json()["forced_outcome"] == "succeeded"
    assert puffle.statuses(run_id, 1) == ["completed"]  # forced: no faults, no waiting

    failed = puffle.start_run("x [emulator: polls=never]")
    http.post(f"/_emulator/runs/{failed}/complete", json={"outcome": "failed"})
    assert puffle.poll(failed).json()["status"] == "failed"
    cancelled = puffle.start_run("x [emulator: polls=never]")
    http.post(f"/_emulator/runs/{cancelled}/complete", json={"outcome": "cancelled"})
    assert puffle.statuses(cancelled, 1) == ["cancelled"]


@pytest.mark.parametrize("body", [b'{"outcome": "paused"}', b'{"outcome": 1}', b"nope", b"[]"])
def test_complete_rejects_bad_bodies(puffle: PuffleClient, http: httpx.Client, body: bytes) -> None:
    run_id = puffle.start_run()
    assert http.post(f"/_emulator/runs/{run_id}/complete", content=body).status_code == 400


def test_complete_unknown_run(http: httpx.Client, emulator: EmulatorServer) -> None:
    assert http.post("/_emulator/runs/run_nope/complete").status_code == 404
    with pytest.raises(KeyError):
        emulator.complete("run_nope")
    with pytest.raises(KeyError):
        emulator.run("run_nope")


def test_default_scenario(puffle: PuffleClient, http: httpx.Client) -> None:
    response = http.put("/_emulator/scenario", json={"scenario": "polls=0 outcome=failed error='from default'"})
    assert response.status_code == 200
    assert response.json()["parsed"]["outcome"] == "failed"
    assert http.get("/_emulator/scenario").json()["scenario"] == response.json()["scenario"]
    plain = puffle.start_run("no directive")
    assert puffle.poll(plain).json()["error"] == "from default"
    own = puffle.start_run("x [emulator: polls=0]")
    assert puffle.statuses(own, 1) == ["completed"]  # a directive replaces the default entirely
    bad = http.put("/_emulator/scenario", json={"scenario": "pols=1"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "emulator: unknown scenario key 'pols'"}
    assert http.put("/_emulator/scenario", content=b"polls=1").status_code == 400
    assert http.put("/_emulator/scenario", json={"scenario": None}).json() == {"scenario": None, "parsed": None}
    assert puffle.statuses(puffle.start_run(), 1) == ["running"]


def test_reset(puffle: PuffleClient, http: httpx.Client) -> None:
    run_id = puffle.start_run()
    conv = puffle.start("x").json()["conversationId"]
    http.put("/_emulator/scenario", json={"scenario": "polls=0"})
    assert http.post("/_emulator/reset").json() == {"ok": True}
    assert http.get("/_emulator/requests").json() == {"requests": []}
    assert http.get(f"/_emulator/runs/{run_id}").status_code == 404
    assert http.get("/_emulator/scenario").json()["scenario"] is None
    assert puffle.poll(run_id).status_code == 404
    assert puffle.start("x", conversationId=conv).status_code == 404


def test_unknown_paths_answer_json(http: httpx.Client) -> None:
    response = http.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}
    wrong_method = http.delete("/api/agent/chat")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()
