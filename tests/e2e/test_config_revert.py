"""A remote config change never keeps a device from starting (edge.config.pending): the real gateway
gets an unsigned `cmd/config` patch that validates but cannot start (a model version the store does
not have), exits 75 to be restarted with it, and the restarted gateway puts the previous file back,
starts, serves and reports `config_reverted`."""
from __future__ import annotations

from pathlib import Path

from edge.config import pending
from edge.errors import EXIT_RESTART
from tests.fixtures.gateway import COMMAND_DEVICE
from tests.support.mqtt import latest_retained, payloads
from tests.support.waits import wait_until

DEVICE = COMMAND_DEVICE


def test_a_patch_the_gateway_cannot_start_with_is_reverted_and_reported(command_gateway) -> None:
    gw, req, recorder = command_gateway
    original = gw.config_path.read_text()
    pending = Path(str(gw.config_path) + ".pending")
    reply = req.request("config", b'{"patch": {"model": {"version": 987654}}}')
    assert reply["ok"], reply
    assert reply["result"]["applied"] == "restart" and reply["result"]["restart_keys"] == ["model.version"]
    assert gw.proc is not None and gw.proc.wait(60) == EXIT_RESTART
    assert "987654" in gw.config_path.read_text() and pending.is_file()
    wait_until(lambda: latest_retained(recorder, f"edge/{DEVICE}/status") == "restarting", 20)
    served_before = len(payloads(recorder, f"edge/{DEVICE}/results/red-cam"))

    gw.start()  # what systemd does on status 75
    reverted = wait_until(
        lambda: [e for e in payloads(recorder, f"edge/{DEVICE}/events") if e["event"] == "config_reverted"], 180,
        interval_s=0.5, message="config_reverted from the restarted gateway")
    event = reverted[0]
    assert event["keys"] == ["model.version"] and "987654" in event["reason"], event
    assert gw.alive(), gw.log()[-3000:]
    assert gw.config_path.read_text() == original  # the file as it was before the patch
    assert not pending.exists() and not Path(str(gw.config_path) + ".reverted").exists()
    wait_until(lambda: len(payloads(recorder, f"edge/{DEVICE}/results/red-cam")) > served_before + 3, 120,
               message="results from the gateway on the previous config")
    assert latest_retained(recorder, f"edge/{DEVICE}/status") == "online"
    assert "reverting the config change to model.version" in gw.log()


def test_a_change_whose_starts_keep_dying_is_reverted_before_the_next_try(command_gateway) -> None:
    """Two starts that never finished (killed, out of memory) with a pending change: the third start puts
    the previous file back before trying."""
    gw, req, recorder = command_gateway
    assert gw.terminate() == 0
    before = gw.config_path.with_name("before.toml")
    before.write_text(gw.config_path.read_text() + "\n[results]\nmin_score = 0.3\n")
    pending.mark_pending(gw.config_path, before, ["results.min_score"])
    for _ in range(pending.MAX_ATTEMPTS):
        pending.begin_attempt(gw.config_path)  # as two starts that died would have counted
    gw.start()
    reverted = wait_until(
        lambda: [e for e in payloads(recorder, f"edge/{DEVICE}/events") if e["event"] == "config_reverted"], 180,
        interval_s=0.5, message="config_reverted")
    assert reverted[0]["keys"] == ["results.min_score"]
    assert "did not finish starting" in reverted[0]["reason"]
    assert gw.config_path.read_text() == before.read_text()
    wait_until(lambda: gw.alive() and req.request("ping", b"", 60)["result"]["results"]["min_score"] == 0.3,
               120, interval_s=1.0, message="the gateway running on the previous file")
