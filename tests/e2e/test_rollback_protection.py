"""Update freshness: a device refuses a model version older than one it already accepted, unless a
rollback document signed by the fleet root key names it; real TLS + ACL Mosquitto, real
docker-registry, real gateway.

The registry admin (or whoever can move a tag) points the channel at an older, validly signed
version: refused without downloading it into the store, and again after a restart (the floor is in
the persisted model state), and when an operator deploys the old tag explicitly. A signed rollback
allows exactly that version (once: a replay is refused). The automatic probation rollback and
``cmd/rollback`` to the previous version on disk stay allowed. Results keep flowing throughout.

Mix-and-match: another validly signed build published under the version number the device accepted
(the channel moved to it) is refused too, before and after a restart, while the accepted build keeps
serving (its digest in the retained `model` state).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.util.signed import DocType
from tests.support.packages import push
from tests.support.trust import sign
from tests.support.trust_fleet import TrustFleet
from tests.support.waits import wait_until

DEVICE = "gw-fresh"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, colour_packages: dict[str, Path]) -> Iterator[TrustFleet]:
    fleet = TrustFleet.build(tmp_path_factory.mktemp("rollback-e2e"), colour_packages, DEVICE)
    try:
        yield fleet
    finally:
        fleet.close()


def model_state(fleet: TrustFleet) -> dict:
    return json.loads((fleet.workdir / "store" / "colour" / ".edge-state.json").read_text())


def stale_refusals(fleet: TrustFleet, digest: str) -> list[dict]:
    return [e for e in fleet.events("model_install_failed")
            if e["digest"] == digest and "rollback refused" in e["reason"]]


def accepted_build_serves(fleet: TrustFleet, digest: str) -> None:
    """The retained `model` state and the state file say version 2 serves as the build `digest`, and
    that build's folder is the one in the store."""
    wait_until(lambda: fleet.docs("model")[-1]["serving"] == {"version": 2, "digest": digest}, 30,
               message=f"the model state serving version 2 as {digest[:19]}")
    state = model_state(fleet)
    assert state["serving"] == {"version": 2, "digest": digest} and state["installed"]["2"] == digest


def test_rollback_protection_end_to_end(fleet: TrustFleet) -> None:
    registry = fleet.registry.address
    d2 = fleet.push("stable", "good2")
    fleet.start_gateway()
    fleet.wait_serving(2)
    fleet.results_flow(2)
    assert model_state(fleet)["highest"] == {"version": 2, "digest": d2}

    # 1. the channel moved back to an older, validly signed version (never installed here)
    seq = fleet.last_seq()
    d1 = fleet.push("stable", "good1")
    fleet.push("1", "good1")
    fleet.wait_event("model_install_failed", digest=d1, reason="rollback refused: version 1 is older than version 2")
    event = stale_refusals(fleet, d1)[0]
    assert event["permanent"] is True and "edgectl trust sign rollback --version 1" in event["reason"]
    assert not (fleet.workdir / "store" / "colour" / "1").exists()  # never moved into the store
    fleet.results_flow(2, after_seq=seq)
    assert fleet.serving() == 2

    # 1b. mix-and-match: another build (validly signed) published as version 2, the number accepted
    rebuild = fleet.workdir / "good2-rebuild"
    shutil.copytree(fleet.packages["good2"], rebuild)
    (rebuild / "assets.extra" / "build.txt").write_text("another build published as version 2\n")
    seq = fleet.last_seq()
    d2b = push(fleet.registry, "stable", rebuild, fleet.keys["model"])
    assert d2b != d2
    another_build = f"rollback refused: version 2 is another build ({d2b[:19]}) of version 2 than the one accepted"
    event = fleet.wait_event("model_install_failed", digest=d2b, reason=another_build)
    assert event["permanent"] is True and f"edgectl trust sign rollback --version 2 --digest {d2b}" in event["reason"]
    fleet.results_flow(2, after_seq=seq)
    accepted_build_serves(fleet, d2)
    assert d2b in model_state(fleet)["bad"]

    # 2. after a restart the floor still holds (it is in the persisted model state)
    gateway = fleet.gateway
    assert gateway is not None and gateway.terminate() == 0
    seq = fleet.last_seq()
    gateway = fleet.start_gateway()
    fleet.results_flow(2, after_seq=seq, timeout_s=180)
    assert model_state(fleet)["highest"] == {"version": 2, "digest": d2}
    accepted_build_serves(fleet, d2)
    # ... for the other build of version 2 too, even asked for explicitly (a deploy retries a known-bad digest)
    refusals, seq = len(stale_refusals(fleet, d2b)), fleet.last_seq()
    reply = fleet.request("deploy", {"ref": f"{registry}/models/colour:stable"})
    assert reply["ok"], reply
    wait_until(lambda: len(stale_refusals(fleet, d2b)) > refusals, 60, message="the other build refused after a restart")
    assert another_build in stale_refusals(fleet, d2b)[-1]["reason"]
    fleet.results_flow(2, after_seq=seq)
    accepted_build_serves(fleet, d2)
    assert fleet.push("stable", "good1") == d1  # the channel back on v1 (known bad here) for step 4

    # 3. an operator (or whoever holds the broker account) deploys the old tag explicitly: refused too
    refusals, seq = len(stale_refusals(fleet, d1)), fleet.last_seq()
    reply = fleet.request("deploy", {"ref": f"{registry}/models/colour:1"})
    assert reply["ok"], reply  # queued; the refusal comes as an event
    fleet.wait_event("model_install_failed", since=0, digest=d1, reason="rollback refused")
    wait_until(lambda: len(stale_refusals(fleet, d1)) > refusals, 60, message="the forced deploy refused as stale")
    fleet.results_flow(2, after_seq=seq)

    # 4. a signed rollback allows exactly v1 (and follows the channel again)
    content = {"model": "colour", "version": 1, "digest": d1, "ref": f"{registry}/models/colour:stable"}
    doc = sign(DocType.ROLLBACK, fleet.keys["root"], device="gw-*", content=content)
    wrong = sign(DocType.ROLLBACK, fleet.keys["root"], device=DEVICE, content={**content, "model": "other"})
    reply = fleet.request("rollback", {"signed": wrong})
    assert not reply["ok"] and "this device serves 'colour'" in reply["error"], reply
    reply = fleet.request("rollback", {"signed": doc})
    assert reply["ok"], reply
    assert reply["result"]["allowed"] == {"version": 1, "digest": d1} and reply["result"]["queued"]
    seq = fleet.last_seq()
    fleet.wait_event("model_switched", version=1, digest=d1)
    fleet.results_flow(1, after_seq=seq)
    fleet.wait_event("model_probation_passed", version=1)
    state = model_state(fleet)
    assert state["serving"]["version"] == 1 and state["highest"]["version"] == 2
    assert state["rollback_allowed"] == {}  # used up: a later move back to v1 needs a new document

    # 5. the same document again is a replay
    reply = fleet.request("rollback", {"signed": doc})
    assert not reply["ok"] and "replayed or outdated document" in reply["error"], reply
    fleet.wait_event("signed_document_refused", command="rollback")

    # 6. forward again, then the operational rollback to the previous version on disk is still allowed
    d3 = fleet.push("stable", "good3")
    fleet.wait_event("model_probation_passed", version=3, digest=d3, timeout_s=120)
    assert model_state(fleet)["highest"] == {"version": 3, "digest": d3}
    seq = fleet.last_seq()
    reply = fleet.request("rollback", {}, timeout_s=120)
    assert reply["ok"] and reply["result"]["version"] == 1, reply
    fleet.results_flow(1, after_seq=seq)
    assert model_state(fleet)["state"] == "rolled-back" and model_state(fleet)["highest"]["version"] == 3
    assert gateway.alive()
