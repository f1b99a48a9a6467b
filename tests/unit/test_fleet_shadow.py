"""Desired/reported documents (edge.util.shadow), the convergence rule (edge.rollout.convergence) and the
fleet-managed config baselines (edge.device.desired_config): bad documents are refused naming the field."""
from __future__ import annotations

import json

import pytest

from edge.device.desired_config import ConfigRecord, plan
from edge.errors import DesiredStateError
from edge.models.state import ModelState, RolloutState
from edge.rollout.convergence import Action, converge
from edge.util.shadow import (
    GenerationVerdict,
    ModelProgress,
    Outcome,
    judge_generation,
    judge_reported,
    parse_desired,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
REF = "reg.example:5000/models/colour:stable"


def doc(**fields) -> bytes:
    return json.dumps({"generation": 3, **fields}).encode()


def test_a_full_document_parses_and_pins_the_digest() -> None:
    d = parse_desired(doc(model={"ref": REF, "digest": D2}, config={"revision": 4, "values": {"results": {
        "min_score": 0.2}}}, rollout="r-1", previous={"model": {"ref": REF, "digest": D1}, "config": None},
        issued_at=1.5, issued_by="ops"))
    assert d.generation == 3 and d.model is not None and d.model.pinned == f"{REF}@{D2}"
    assert d.config is not None and d.config.revision == 4 and d.rollout == "r-1"
    assert parse_desired(d.to_json()).target_sha256 == d.target_sha256


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "document: must be an object, got an array"),
    (doc(generation=0), "generation: must be between 1"),
    (doc(generation=True), "generation: must be an integer, got a boolean"),
    (doc(generation="4"), "generation: must be an integer, got a string"),
    (json.dumps({"model": {"ref": REF, "digest": D1}}).encode(), "missing field(s) ['generation']"),
    (doc(registry={"ref": "evil.example/m:1"}), "unknown field(s) ['registry']"),
    (doc(model={"ref": REF}), "model: missing field(s) ['digest']"),
    (doc(model={"ref": REF, "digest": "sha256:abc"}), "model.digest: must be sha256"),
    (doc(model={"ref": "http://x/y:1", "digest": D1}), "model.ref: reference"),
    (doc(model={"ref": f"{REF}@{D1}", "digest": D2}), "model.ref: pins"),
    (doc(model={"ref": REF, "digest": D1, "public_key": "x"}), "model: unknown field(s) ['public_key']"),
    (doc(config={"revision": -1, "values": {}}), "config.revision: must be between 0"),
    (doc(config={"revision": 1, "values": {"results": {"min_score": None}}}), "config.values.results.min_score: null"),
    (doc(config={"revision": 1, "values": {"results": {}}}), "config.values.results: an empty object"),
    (doc(config={"revision": 1, "values": {"a.b": 1}}), "without '.'"),
    (doc(config={"revision": 1, "values": {"k": 1}, "patch": {}}), "config: unknown field(s) ['patch']"),
    (doc(rollout="bad id!"), "rollout: 'bad id!' is not a rollout id"),
    (doc(previous={"model": {"ref": REF}}), "previous.model: missing field(s) ['digest']"),
    (b"{" + b'"a": ' * 1 + b'"' + b"x" * 70000 + b'"}', "the limit is 65536"),
])
def test_bad_documents_are_refused_naming_what_is_wrong(payload: bytes, message: str) -> None:
    with pytest.raises(DesiredStateError) as info:
        parse_desired(payload)
    assert message in str(info.value)


def test_generations_are_ordered_and_a_reused_generation_must_agree() -> None:
    d = parse_desired(doc(generation=5, model={"ref": REF, "digest": D2}))
    assert judge_generation(4, None, d) is GenerationVerdict.NEW
    assert judge_generation(5, d.target_sha256, d) is GenerationVerdict.SAME
    assert judge_generation(6, None, d) is GenerationVerdict.STALE
    other = parse_desired(doc(generation=5, model={"ref": REF, "digest": D3}))
    assert judge_generation(5, d.target_sha256, other) is GenerationVerdict.CONFLICT
    # what the generation promises is the target: rollout ids and timestamps may differ
    again = parse_desired(doc(generation=5, model={"ref": REF, "digest": D2}, issued_at=9.0, rollout="r"))
    assert judge_generation(5, d.target_sha256, again) is GenerationVerdict.SAME


def test_the_fleet_side_reads_reported_documents() -> None:
    assert judge_reported(4, None)[0] is Outcome.PENDING
    assert judge_reported(4, {"generation": 3, "state": "converged"})[0] is Outcome.PENDING
    assert judge_reported(4, {"generation": 4, "state": "converged"}) == (Outcome.CONVERGED, "")
    outcome, reason = judge_reported(4, {"generation": 4, "state": "failed", "model": {
        "state": "rolled-back", "reason": "probation: error rate"}})
    assert outcome is Outcome.FAILED and "rolled-back: probation" in reason
    outcome, reason = judge_reported(4, {"generation": 3, "state": "converged",
                                         "refused": {"generation": 4, "reason": "unknown field(s) ['x']"}})
    assert outcome is Outcome.FAILED and "unknown field" in reason


def state(**fields) -> ModelState:
    base = dict(state=RolloutState.SERVING, serving_version=1, serving_digest=D1, installed={1: D1})
    return ModelState(**{**base, **fields})


def test_convergence_deploys_rolls_back_one_step_waits_and_reports_failures() -> None:
    pinned = f"{REF}@{D2}"
    c = converge(state(), D2, pinned, retry=True, now=0.0)
    assert (c.progress, c.action) == (ModelProgress.PENDING, Action.DEPLOY)
    c = converge(state(ref=pinned, state=RolloutState.DOWNLOADING), D2, pinned, retry=False, now=0.0)
    assert (c.progress, c.action) == (ModelProgress.INSTALLING, Action.NONE)
    c = converge(state(ref=pinned, state=RolloutState.PROBATION, serving_version=2, serving_digest=D2,
                       previous_version=1, previous_digest=D1), D2, pinned, retry=False, now=0.0)
    assert c.progress is ModelProgress.PROBATION and c.version == 2
    # a step of another digest is running: wait (judged later, retry kept)
    c = converge(state(state=RolloutState.VALIDATING), D2, pinned, retry=True, now=0.0)
    assert c.waiting and c.action is Action.NONE
    # the previous version on disk: the one-step rollback
    c = converge(state(serving_version=2, serving_digest=D2, previous_version=1, previous_digest=D1,
                       installed={1: D1, 2: D2}), D1, f"{REF}@{D1}", retry=True, now=0.0)
    assert c.action is Action.ROLLBACK
    # serving it, but following another ref: follow it (installs nothing)
    c = converge(state(), D1, f"{REF}@{D1}", retry=False, now=0.0)
    assert (c.progress, c.action) == (ModelProgress.SERVING, Action.DEPLOY)
    # refused before: retried once per generation, then reported with the device's reason
    bad = state(ref=pinned, bad={D2: "version 2: golden image red.png: top-1 2 != 0"})
    assert converge(bad, D2, pinned, retry=True, now=0.0).action is Action.DEPLOY
    c = converge(bad, D2, pinned, retry=False, now=0.0)
    assert (c.progress, c.reason) == (ModelProgress.FAILED, "version 2: golden image red.png: top-1 2 != 0")
    rolled = state(ref=pinned, bad={D2: "probation: error rate"}, validated=[D2], highest_version=2,
                   highest_digest=D2, installed={1: D1, 2: D2})
    assert converge(rolled, D2, pinned, retry=False, now=0.0).progress is ModelProgress.ROLLED_BACK
    # an older version than accepted is a failure, not a rollback
    older = state(serving_version=3, serving_digest=D3, highest_version=3, highest_digest=D3, validated=[D1, D3],
                  installed={1: D1, 3: D3}, bad={D1: "rollback refused: version 1 is older"}, ref=f"{REF}@{D1}")
    assert converge(older, D1, f"{REF}@{D1}", retry=False, now=0.0).progress is ModelProgress.FAILED


def test_fleet_config_values_remember_the_device_s_own_values_and_give_them_back() -> None:
    document = {"device_id": "d", "results": {"min_score": 0.1},
                "cameras": [{"name": "front", "source": "rtsp://x/a", "fps": 5.0}]}
    record = ConfigRecord()
    patch, baseline = plan(document, {"results": {"min_score": 0.3, "publish": "on_change"},
                                      "cameras": {"front": {"fps": 2.0}}}, record)
    assert patch == {"results": {"min_score": 0.3, "publish": "on_change"}, "cameras": {"front": {"fps": 2.0}}}
    assert baseline == {"results.min_score": {"present": True, "value": 0.1},
                        "results.publish": {"present": False, "value": None},
                        "cameras.front.fps": {"present": True, "value": 5.0}}
    applied = {"device_id": "d", "results": {"min_score": 0.3, "publish": "on_change"},
               "cameras": [{"name": "front", "source": "rtsp://x/a", "fps": 2.0}]}
    # the next revision manages only min_score: publish goes back to unset, fps back to 5
    patch, later = plan(applied, {"results": {"min_score": 0.5}}, ConfigRecord(1, "x", baseline))
    assert patch == {"results": {"min_score": 0.5, "publish": None}, "cameras": {"front": {"fps": 5.0}}}
    assert later == {"results.min_score": {"present": True, "value": 0.1}}
    # an empty revision gives everything back
    patch, later = plan(applied, {}, ConfigRecord(2, "y", later))
    assert patch == {"results": {"min_score": 0.1}} and later == {}
