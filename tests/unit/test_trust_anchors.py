"""Trust anchors stay local: the one classified key list, config patches refused without a signature
(nothing written), rollback protection rules, and commands classified by sensitivity."""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.config.loader import parse_config
from edge.config.patch import LiveConfig, to_toml
from edge.config.trust_keys import KEYS, anchor_keys, is_live, schema_keys, touched_anchors
from edge.errors import CommandError, PatchError, TrustError
from edge.models.state import ModelState, RolloutState, StateStore, recover
from edge.rollout.policy import stale_version
from edge.transport.commands import CommandRouter
from edge.util.trustroot import Sensitivity
from tests.support.trust import ATTACK_VALUES, ISSUE_19_PATCH, attack_patch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def test_every_schema_key_is_classified_exactly_once() -> None:
    """Adding a config key without deciding whether it is live and whether it is a trust anchor fails here."""
    keys = schema_keys()
    assert keys - set(KEYS) == set(), "classify these keys in edge/config/trust_keys.py KEYS"
    assert set(KEYS) - keys == set(), "KEYS lists keys the schema no longer has"


def test_the_anchor_list_holds_what_issue_19_names() -> None:
    named = {"registry.public_key", "registry.ref", "registry.insecure", "registry.ca_file", "registry.username",
             "registry.password", "mqtt.url", "mqtt.username", "mqtt.password", "mqtt.ca_file", "mqtt.cert_file",
             "mqtt.key_file", "mqtt.client_id", "mqtt.topic_prefix", "mqtt.allow_plaintext_password", "model.store",
             "spool.path", "health.status_file", "trust.root_key", "trust.state_file"}
    assert named <= set(anchor_keys())
    assert set(ATTACK_VALUES) == set(anchor_keys()), "tests/support/trust.py ATTACK_VALUES: one per anchor"


def test_docs_list_every_trust_anchor() -> None:
    """docs/threat-model.md's table of keys that need a signature is the code's list, no more, no less."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "threat-model.md").read_text()
    section = text.split("## Remote changes that need a signature", 1)[1].split("### How an operator", 1)[0]
    listed = {cell.strip("`") for line in section.splitlines() if line.startswith("| `")
              for cell in line.split("|")[1].replace(",", " ").split()}
    assert listed == set(anchor_keys())


def test_every_test_the_threat_model_names_exists() -> None:
    """Each boundary row of docs/threat-model.md names tests (`file::test`, or `::test` in the file
    named before it on the row): they must exist, so the page cannot point at tests that are gone."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "threat-model.md").read_text()
    rows = [line for line in text.split("## Boundaries and their tests", 1)[1].split("### Not defended", 1)[0]
            .splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert len(rows) >= 18
    named = 0
    for row in rows:
        current = None
        for ref in re.findall(r"`((?:tests/[\w/]+\.py)?::\w+)`", row.split("|")[-2]):
            path, _, name = ref.partition("::")
            current = path or current
            assert current is not None, row
            tree = ast.parse((root / current).read_text())
            assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{current}::{name}"
            named += 1
    assert named >= 30


def test_classification_of_changed_paths() -> None:
    assert touched_anchors([("registry",)]) == sorted(k for k in anchor_keys() if k.startswith("registry."))
    assert touched_anchors([("cameras", "1", "source")]) == ["cameras.*.source"]
    assert touched_anchors([("cameras",)]) == ["cameras.*.source"]  # a camera added or removed
    assert touched_anchors([("cameras", "0", "fps"), ("results", "publish"), ("rollout", "tolerance")]) == []
    assert is_live(("cameras", "0", "fps")) and is_live(("cameras", "0", "source")) and is_live(("log_level",))
    assert not is_live(("cameras",)) and not is_live(("serving", "max_batch_size")) and not is_live(("registry",))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    video = tmp_path / "front.avi"
    video.write_bytes(b"")
    (tmp_path / "models.pub").write_text("key")
    doc = {"device_id": "gate-01", "cameras": [{"name": "front", "source": str(video), "fps": 5.0}],
           "model": {"name": "colour", "store": str(tmp_path / "models")},
           "mqtt": {"url": "mqtt://127.0.0.1:1883"}, "spool": {"path": str(tmp_path / "spool.db")},
           "registry": {"ref": "127.0.0.1:5000/models/colour:stable", "public_key": str(tmp_path / "models.pub"),
                        "insecure": True}}
    path = tmp_path / "gateway.toml"
    path.write_text("# the operator's comments\n" + to_toml(doc))
    return path


def live(path: Path) -> LiveConfig:
    return LiveConfig(parse_config(tomllib.loads(path.read_text()), str(path)), path)


def unchanged(path: Path, before: bytes) -> bool:
    return path.read_bytes() == before and not path.with_name(path.name + ".bak").exists()


@pytest.mark.parametrize("key", anchor_keys())
def test_each_anchor_is_refused_without_a_signature_and_nothing_is_written(config_file: Path, key: str) -> None:
    before = config_file.read_bytes()
    patch = attack_patch(key, "front", tomllib.loads(before.decode()))
    with pytest.raises(TrustError) as caught:
        live(config_file).patch(patch)
    assert key in caught.value.keys and key in str(caught.value)
    assert "edgectl trust sign config" in str(caught.value)
    assert unchanged(config_file, before)


@pytest.mark.parametrize("patch", [
    ISSUE_19_PATCH["patch"],
    {"registry": None},  # the whole section: unsigned models from nowhere
    {"trust": {"root_key": None}},
    {"cameras": [{"name": "front", "source": "gst:videotestsrc ! appsink"}]},  # the list replaced
    {"cameras": {"front": None}},  # a camera removed
])
def test_section_removals_and_list_replacements_touching_anchors_are_refused(config_file: Path, patch: dict) -> None:
    before = config_file.read_bytes()
    with pytest.raises(TrustError):
        live(config_file).patch(patch)
    assert unchanged(config_file, before)


def test_anchor_refusal_comes_before_validation(config_file: Path) -> None:
    """An invalid anchor value is refused as an anchor change: validation says nothing about anchors."""
    with pytest.raises(TrustError, match="mqtt.url"):
        live(config_file).patch({"mqtt": {"url": 5}})


def test_operational_changes_still_apply_and_a_signed_patch_is_authorised_before_writing(config_file: Path) -> None:
    cfg = live(config_file)
    outcome = cfg.patch({"cameras": {"front": {"fps": 2.0}}, "results": {"publish": "on_change"}})
    assert outcome.applied == "live" and outcome.changed == ["cameras.front.fps", "results.publish"]
    calls: list[bytes] = []
    outcome = cfg.patch({"registry": {"timeout_s": 20.0}}, authorise=lambda: calls.append(config_file.read_bytes()))
    assert outcome.applied == "restart" and outcome.restart_keys == ["registry.timeout_s"]
    assert b"timeout_s" not in calls[0]  # authorised (the counter recorded) before the file changed
    assert tomllib.loads(config_file.read_text())["registry"]["timeout_s"] == 20.0

    def refuse() -> None:
        raise PatchError("state file unwritable")

    before = config_file.read_bytes()
    with pytest.raises(PatchError):
        cfg.patch({"registry": {"max_mb": 10.0}}, authorise=refuse)
    assert config_file.read_bytes() == before


def test_an_invalid_signed_patch_is_refused_before_it_is_authorised(config_file: Path) -> None:
    calls: list[int] = []
    with pytest.raises(PatchError, match="registry.timeout_s"):
        live(config_file).patch({"registry": {"timeout_s": -1}}, authorise=lambda: calls.append(1))
    assert calls == []  # the document's counter is not used up by a patch that cannot apply


# -- rollback protection --------------------------------------------------------------------------

def test_stale_versions_are_refused_unless_a_signed_rollback_allows_them() -> None:
    state = ModelState(highest_version=3, highest_digest=D3)
    assert stale_version(state, 4, D1, 0) is None and stale_version(state, 3, D3, 0) is None
    reason = stale_version(state, 2, D2, 100.0)
    assert reason is not None and "older than version 3" in reason and "edgectl trust sign rollback" in reason
    assert "another build" in str(stale_version(state, 3, D1, 100.0))
    state.rollback_allowed[D2] = {"version": 2, "expires": 200.0, "counter": 9}
    assert stale_version(state, 2, D2, 100.0) is None
    assert "expired" in str(stale_version(state, 2, D2, 300.0))
    assert stale_version(state, 1, D2, 100.0) is not None  # the allowance names version and digest together
    assert stale_version(ModelState(), 1, D1, 0) is None  # nothing accepted yet: a first install


def test_highest_version_and_allowances_persist_and_old_state_files_are_migrated(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = ModelState(state=RolloutState.SERVING, serving_version=2, serving_digest=D2)
    state.rollback_allowed[D1] = {"version": 1, "expires": 5.0, "counter": 3}
    state.accepted(3, D3)
    state.accepted(1, D1)  # switched in under its allowance: used up, the floor stays at 3
    store.save(state)
    loaded = store.load()
    assert (loaded.highest_version, loaded.highest_digest, loaded.rollback_allowed) == (3, D3, {})
    old = json.loads((tmp_path / ".edge-state.json").read_text())
    del old["highest"], old["rollback_allowed"]
    (tmp_path / ".edge-state.json").write_text(json.dumps(old))
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"")
    migrated = recover(store.load(), tmp_path)
    assert (migrated.highest_version, migrated.highest_digest) == (2, D2)


# -- command sensitivity --------------------------------------------------------------------------

class _Transport:
    def topic(self, *parts: str) -> str:
        return "/".join(("edge", "d", *parts))

    def topic_filter(self, *parts: str) -> str:
        return self.topic(*parts)

    def subscribe(self, topic_filter: str, callback: Any, qos: int = 1) -> None:
        pass

    def respond(self, request: Any, payload: dict[str, Any]) -> bool:
        return True


def test_every_registration_states_a_sensitivity_and_sensitive_ones_need_a_signed_document() -> None:
    router = CommandRouter(_Transport())
    with pytest.raises(TypeError):
        router.register("nosay", lambda p: {}, {})  # type: ignore[call-arg]
    router.register("look", lambda p: {}, {}, sensitivity=Sensitivity.READ_ONLY)
    router.register("rotate", lambda p: {}, {}, sensitivity=Sensitivity.SENSITIVE)
    assert router.classification() == {"look": "read-only", "rotate": "sensitive"}
    command = router._commands["rotate"]
    for payload in (b"{}", b'{"signed": "x"}', b'{"signed": null}'):
        with pytest.raises(CommandError, match="sensitive command: its payload must be"):
            router.parse(command, payload)
    assert router.parse(command, b'{"signed": {"payload": "..."}}') == {"signed": {"payload": "..."}}
