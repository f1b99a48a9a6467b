"""edge.transport.commands (the device command router) over a real Mosquitto: MQTT 5 request/response,
payload checks, reconnects."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.errors import CommandError
from edge.transport.commands import CommandRouter
from edge.transport.mqtt import MqttSettings
from edge.transport.outbox import MqttReporter
from edge.transport.spool import Spool
from edge.util.trustroot import Sensitivity
from tests.support.mqtt import Requester
from tests.support.waits import wait_until

DEVICE = "cmd-dev"


@pytest.fixture
def router_and_calls(mosquitto, tmp_path: Path):
    reporter = MqttReporter(MqttSettings(url=mosquitto.url, keepalive_s=5, reconnect_min_s=0.2, reconnect_max_s=1.0),
                            DEVICE, Spool(tmp_path / "spool.db", sync="normal"))
    calls: list[tuple[str, dict[str, Any]]] = []

    def deploy(payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(("deploy", payload))
        if payload.get("ref") == "refuse":
            raise CommandError("ref 'refuse': no such thing")
        return {"queued": True, "ref": payload.get("ref", "configured")}

    router = CommandRouter(reporter)
    router.register("deploy", deploy, {"ref": str}, sensitivity=Sensitivity.OPERATIONAL)
    router.register("rollback", lambda p: calls.append(("rollback", p)) or {"version": 1}, {},
                    sensitivity=Sensitivity.OPERATIONAL)
    router.start()
    reporter.start()
    assert reporter.wait_connected(20)
    yield router, calls, reporter
    router.stop()
    reporter.stop(flush_timeout_s=1.0)


def test_request_response_and_refusals(mosquitto, router_and_calls) -> None:
    _router, calls, _ = router_and_calls
    req = Requester(mosquitto, DEVICE)
    try:
        wait_until(lambda: req.request("rollback", b"{}")["ok"], 20, interval_s=0.5, message="router subscribed")
        assert req.request("deploy", b'{"ref": "r:1"}') == {"ok": True, "command": "deploy",
                                                            "result": {"queued": True, "ref": "r:1"}}
        assert req.request("deploy", b"") ["result"] == {"queued": True, "ref": "configured"}
        before = list(calls)
        cases = {
            b"{not json": "payload is not valid JSON",
            b"[1, 2]": "payload must be a JSON object, got array",
            b'{"ref": 5}': "ref: must be string, got integer",
            b'{"ref": "x", "force": true}': "unknown key(s) ['force'] for deploy (accepted: ref)",
            b'{"ref": "' + b"a" * 70000 + b'"}': "the limit is 65536",
            b'{"ref": "refuse"}': "ref 'refuse': no such thing",
        }
        for payload, message in cases.items():
            reply = req.request("deploy", payload)
            assert reply["ok"] is False and reply["command"] == "deploy" and message in reply["error"], reply
        assert req.request("rollback", b'{"x": 1}')["error"] == "unknown key(s) ['x'] for rollback (accepted: none)"
        assert calls == before + [("deploy", {"ref": "refuse"})]  # only the well-formed one reached a handler
    finally:
        req.stop()


@pytest.mark.slow
def test_retained_commands_are_ignored_and_subscriptions_survive_a_broker_restart(
        mosquitto, router_and_calls) -> None:
    _router, calls, reporter = router_and_calls
    req = Requester(mosquitto, DEVICE)
    try:
        wait_until(lambda: req.request("rollback", b"{}")["ok"], 20, interval_s=0.5, message="router subscribed")
        calls.clear()
        # A live subscriber gets a retained publish as a normal message (retain flag 0): it runs once...
        req.request("deploy", b'{"ref": "stale"}')
        req.client.publish(f"edge/{DEVICE}/cmd/deploy", b'{"ref": "stale"}', qos=1, retain=True).wait_for_publish(10)
        wait_until(lambda: calls.count(("deploy", {"ref": "stale"})) == 2, 20)
        req.stop()
        mosquitto.stop()
        mosquitto.start()
        wait_until(lambda: reporter.stats()["reconnects"] >= 1, 30, message="reporter reconnected")
        # ...but the replay on (re-)subscribe (retain flag 1) is ignored.
        req = Requester(mosquitto, DEVICE)
        assert req.request("deploy", b'{"ref": "after-restart"}')["ok"]
        assert calls == [("deploy", {"ref": "stale"})] * 2 + [("deploy", {"ref": "after-restart"})]
        req.client.publish(f"edge/{DEVICE}/cmd/deploy", b"", qos=1, retain=True).wait_for_publish(10)
    finally:
        req.stop()
