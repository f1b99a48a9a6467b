"""The device's desired-state agent (edge.device.desired) on a real config file, with the model rollout
replaced by a recorder (the real rollout behind it: tests/e2e/test_gateway_desired_state.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.config import pending
from edge.config.loader import load_config
from edge.config.patch import LiveConfig, PatchOutcome
from edge.device.desired import DesiredContext, DesiredStateAgent
from edge.errors import RolloutError
from edge.models.state import ModelState, RolloutState

D1, D2 = ("sha256:" + c * 64 for c in "12")
REF = "reg.example:5000/models/colour:stable"
CONFIG = """device_id = "gw-1"

[[cameras]]
name = "front"
source = "rtsp://192.0.2.1/a"
fps = 5.0

[model]
name = "colour"

[results]
min_score = 0.1
"""


class Model:
    """Records what the agent asks of the rollout; its state is what the test sets."""

    def __init__(self) -> None:
        self.state = ModelState(state=RolloutState.SERVING, serving_version=1, serving_digest=D1, installed={1: D1})
        self.calls: list[tuple[str, Any]] = []

    def model_state(self) -> ModelState:
        return ModelState.from_json(self.state.to_json())

    def deploy(self, ref: str, retry: bool) -> None:
        self.calls.append(("deploy", ref))
        if not ref.startswith("reg.example:5000/"):
            raise RolloutError(f"ref {ref!r} is on another registry")

    def rollback(self) -> None:
        self.calls.append(("rollback", None))


class Harness:
    def __init__(self, tmp_path: Path, with_model: bool = True) -> None:
        self.path = tmp_path / "gateway.toml"
        self.path.write_text(CONFIG)
        self.live = LiveConfig(load_config(self.path), self.path)
        self.model = Model() if with_model else None
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.reported: list[dict[str, Any]] = []
        self.restarts: list[str] = []
        self.live_applied: list[PatchOutcome] = []
        self.state_path = tmp_path / "desired-state.json"
        self.agent = self.make()

    def make(self) -> DesiredStateAgent:
        return DesiredStateAgent(DesiredContext(
            device_id="gw-1", config=self.live, apply_live=self.live_applied.append,
            request_restart=self.restarts.append, emit=lambda k, p: self.events.append((k, p)),
            publish_reported=lambda d: self.reported.append(d) is None, state_path=self.state_path, model=self.model))

    def send(self, **doc: Any) -> dict[str, Any]:
        self.agent.on_message(json.dumps(doc).encode())
        self.agent.step()
        return self.reported[-1]

    def event_names(self) -> list[str]:
        return [k for k, _ in self.events]


def test_a_model_target_is_deployed_once_and_converges(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    report = h.send(generation=1, model={"ref": REF, "digest": D2}, rollout="r1")
    assert h.model is not None and h.model.calls == [("deploy", f"{REF}@{D2}")]
    assert report["generation"] == 1 and report["state"] == "reconciling" and report["model"]["state"] == "pending"
    h.model.state.ref, h.model.state.state = f"{REF}@{D2}", RolloutState.DOWNLOADING
    h.agent.step()
    assert h.reported[-1]["model"]["state"] == "installing"
    h.model.state.state, h.model.state.serving_version, h.model.state.serving_digest = RolloutState.SERVING, 2, D2
    h.agent.step()
    assert h.reported[-1]["state"] == "converged" and h.reported[-1]["serving"] == {"version": 2, "digest": D2}
    assert h.model.calls == [("deploy", f"{REF}@{D2}")]  # nothing asked twice
    assert h.event_names() == ["desired_state_accepted", "desired_state_converged"]
    # the retained copy again (a reconnect): nothing new, the report re-sent
    sent = len(h.reported)
    h.send(generation=1, model={"ref": REF, "digest": D2}, rollout="r1")
    assert len(h.reported) == sent + 1 and h.model.calls == [("deploy", f"{REF}@{D2}")]


def test_stale_conflicting_and_malformed_documents_are_refused_and_change_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.send(generation=5, model={"ref": REF, "digest": D1})
    before = h.path.read_bytes()
    report = h.send(generation=4, model={"ref": REF, "digest": D2})
    assert report["generation"] == 5 and report["refused"]["generation"] == 4
    assert "older than generation 5" in report["refused"]["reason"]
    report = h.send(generation=5, model={"ref": REF, "digest": D2})
    assert "already accepted with another model/config" in report["refused"]["reason"]
    report = h.send(generation=6, model={"ref": REF, "digest": D2}, registry={"insecure": True})
    assert "unknown field(s) ['registry']" in report["refused"]["reason"]
    report = h.send(generation="7")
    assert "generation: must be an integer, got a string" in report["refused"]["reason"]
    assert h.model is not None and all(ref.endswith(D1) for _, ref in h.model.calls)
    assert h.path.read_bytes() == before and report["state"] == "converged"
    assert h.event_names().count("desired_state_refused") == 4
    # a restart keeps the generation: the stale document is still refused
    h.agent = h.make()
    assert h.send(generation=5, model={"ref": REF, "digest": D2})["refused"]["generation"] == 5


def test_config_revisions_apply_live_and_give_the_device_s_values_back(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    report = h.send(generation=1, config={"revision": 1, "values": {"results": {"min_score": 0.4},
                                                                     "cameras": {"front": {"fps": 2.0}}}})
    assert report["config"] == {"revision": 1, "state": "applied", "reason": None} and report["state"] == "converged"
    assert h.live.current.results.min_score == 0.4 and h.live.current.cameras[0].fps == 2.0
    assert h.live_applied and ("config_changed" in h.event_names())
    report = h.send(generation=2, config={"revision": 2, "values": {}})
    assert h.live.current.results.min_score == 0.1 and h.live.current.cameras[0].fps == 5.0
    assert report["config_revision"] == 2
    # a revision that touches a trust anchor is refused as an unsigned cmd/config is; nothing is written
    before = h.path.read_bytes()
    report = h.send(generation=3, config={"revision": 3, "values": {"registry": {"ref": "evil.example/m:1"}}})
    assert report["config"]["state"] == "refused" and report["state"] == "failed"
    assert "never changes trust anchors" in report["config"]["reason"] and "registry.ref" in report["config"]["reason"]
    report = h.send(generation=4, config={"revision": 4, "values": {"results": {"min_score": 7}}})
    assert report["config"]["state"] == "refused" and "min_score" in report["config"]["reason"]
    report = h.send(generation=5, config={"revision": 1, "values": {"results": {"min_score": 0.2}}})
    assert "older than revision 2" in report["config"]["reason"]
    assert h.path.read_bytes() == before
    # a key that needs a restart: persisted, then the gateway asked to restart
    report = h.send(generation=6, config={"revision": 6, "values": {"serving": {"max_batch_size": 2}}})
    assert report["config"]["state"] == "restarting" and h.restarts
    assert "max_batch_size = 2" in h.path.read_text()
    h.agent = h.make()  # the restarted gateway
    h.agent.step()
    assert h.reported[-1]["config"]["state"] == "applied"


def test_what_a_device_cannot_do_is_reported_not_attempted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    report = h.send(generation=1, model={"ref": "other.example:5000/models/colour:2", "digest": D2})
    assert report["model"]["state"] == "refused" and "another registry" in report["model"]["reason"]
    assert report["state"] == "failed" and "desired_state_failed" in h.event_names()
    plain = Harness(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, with_model=False)
    report = plain.send(generation=1, model={"ref": REF, "digest": D2})
    assert report["model"]["state"] == "refused" and "no [registry]" in report["model"]["reason"]


def test_the_previous_version_is_a_one_step_rollback_then_followed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.model is not None
    h.model.state = ModelState(state=RolloutState.SERVING, serving_version=2, serving_digest=D2, previous_version=1,
                               previous_digest=D1, installed={1: D1, 2: D2}, ref=f"{REF}@{D2}")
    h.send(generation=3, model={"ref": REF, "digest": D1}, restores="r1")
    assert h.model.calls == [("rollback", None)]
    h.model.state.serving_version, h.model.state.serving_digest = 1, D1
    h.model.state.previous_version = h.model.state.previous_digest = None
    h.agent.step()
    assert h.model.calls == [("rollback", None), ("deploy", f"{REF}@{D1}")]
    assert h.reported[-1]["state"] == "converged"


def test_a_revision_the_gateway_could_not_start_with_is_refused_after_the_revert(tmp_path: Path) -> None:
    """edge.config.pending put the previous file back (the restarted gateway failed to start with it):
    the revision is refused, the device's record goes back to the revision before, and a later one applies."""
    h = Harness(tmp_path)
    h.send(generation=1, config={"revision": 1, "values": {"results": {"min_score": 0.4}}})
    report = h.send(generation=2, config={"revision": 2, "values": {"results": {"min_score": 0.4},
                                                                     "model": {"version": 987654}}})
    assert report["config"]["state"] == "restarting" and "version = 987654" in h.path.read_text()
    change = pending.begin_attempt(h.path)
    assert change is not None and change.changed == ["model.version"]
    pending.revert(h.path, change, "cannot start: no version 987654 of model colour")
    h.live = LiveConfig(load_config(h.path), h.path)  # the gateway started again, on the previous file
    h.agent = h.make()
    h.agent.step()
    report = h.reported[-1]
    assert report["config"]["state"] == "refused" and report["state"] == "failed"
    assert "could not start with this revision" in report["config"]["reason"]
    assert report["config_revision"] == 1 and "987654" not in h.path.read_text()
    report = h.send(generation=3, config={"revision": 3, "values": {"results": {"min_score": 0.3}}})
    assert report["config"] == {"revision": 3, "state": "applied", "reason": None} and report["state"] == "converged"
    assert h.live.current.results.min_score == 0.3
