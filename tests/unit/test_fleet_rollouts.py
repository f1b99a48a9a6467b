"""Rollout documents and stages (provisioning.fleet.rollouts), the controller's per-device verdicts
(provisioning.fleet.controller.classify), the --config option of `fleet rollout start` and `fleet
desired set` (provisioning.fleet.options) and the operator profiles (provisioning.profiles)."""
from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest

from edge.errors import DesiredStateError, ProfileError, UsageError
from edge.util.shadow import ModelTarget, Outcome, parse_desired
from provisioning.cli import main
from provisioning.fleet.controller import classify, serving_target
from provisioning.fleet.options import config_option
from provisioning.fleet.rollouts import Rollout, Stage, merge_values, parse_rollout, parse_stage
from provisioning.profiles import load, resolve

D1, D2 = ("sha256:" + c * 64 for c in "12")
REF = "reg.example:5000/models/colour:stable"
DEVICES = [f"gate-{i:02d}" for i in range(40)]


def test_stages_parse_and_grow_cumulatively_in_an_order_fixed_by_the_rollout_id() -> None:
    stages = (parse_stage("canary=gate-07,gate-1*", DEVICES), parse_stage("25%", DEVICES), parse_stage("100%", DEVICES))
    assert stages[0] == Stage("canary", devices=tuple(["gate-07"] + [f"gate-1{i}" for i in range(10)]))
    rollout = Rollout("r-1", tuple(DEVICES), stages, ModelTarget(REF, D2))
    sets = rollout.stage_sets()
    assert [len(s) for s in sets] == [11, 11 + len(set(rollout.order()[:10]) - set(stages[0].devices or ())), 40]
    assert set(sets[0]) <= set(sets[1]) <= set(sets[2]) == set(DEVICES)
    assert Rollout("r-1", tuple(DEVICES), stages).order() == rollout.order()  # the same after a restart
    assert Rollout("r-2", tuple(DEVICES), stages).order() != rollout.order()  # spread differently per rollout
    assert Rollout("r", tuple(DEVICES), (parse_stage("1%", DEVICES),)).stage_sets() == [Rollout(
        "r", tuple(DEVICES), ()).order()[:1]]  # a percentage reaches at least one device
    for bad, message in (("0%", "above 0"), ("x=", "empty"), ("nosuch-*", "matches none"), ("0", "at least 1"),
                         ("1e9%", "at most 100")):
        with pytest.raises(UsageError, match=message):
            parse_stage(bad, DEVICES)


def test_rollout_documents_round_trip_and_bad_ones_are_refused() -> None:
    rollout = Rollout("r-1", tuple(DEVICES), (Stage("canary", count=2), Stage("all", percent=100.0)),
                      ModelTarget(REF, D2), {"results": {"min_score": 0.2}}, max_failures_percent=5.0)
    again = parse_rollout(rollout.to_json())
    assert again.to_json() == rollout.to_json() and again.allowed_failures == 2
    assert Rollout("r", tuple(DEVICES), (), max_failures_percent=None, max_failures_count=3).allowed_failures == 3
    good = rollout.to_json()
    for change, message in (({"kind": "x"}, "not an edge.rollout"), ({"id": "a b"}, "id must be"),
                            ({"stages": []}, "no stages"), ({"state": "lost"}, "state 'lost'"),
                            ({"target": {"model": {"ref": REF, "digest": "x"}}}, "target.model.digest"),
                            ({"devices": "all"}, "devices must be a list")):
        with pytest.raises(DesiredStateError, match=message):
            parse_rollout({**good, **change})
    with pytest.raises(DesiredStateError, match="not valid JSON"):
        parse_rollout(b"{")
    assert merge_values({"results": {"min_score": 0.1, "publish": "always"}}, {"results": {"min_score": 0.3}}) == {
        "results": {"min_score": 0.3, "publish": "always"}}


def test_the_controller_judges_each_device_from_its_retained_documents() -> None:
    rollout = Rollout("r-1", ("a", "b", "c", "d", "e"), (Stage("all", percent=100.0),), ModelTarget(REF, D2),
                      device_timeout_s=60.0)
    mine = {"generation": 4, "rollout": "r-1", "model": {"ref": REF, "digest": D2}}
    desired = {"a": parse_desired(mine), "b": parse_desired(mine), "c": parse_desired({**mine, "rollout": "other"}),
               "d": parse_desired(mine), "e": None}
    reported = {"a": {"generation": 4, "state": "converged"},
                "b": {"generation": 4, "state": "reconciling", "since": 1000.0, "model": {"state": "installing"}},
                "d": {"generation": 4, "state": "reconciling", "since": 1000.0}}
    status = {"a": "online", "b": "online", "c": "online", "d": "offline"}
    progress = classify(rollout, status, desired, reported, {"e": 9}, now=1030.0)
    assert progress["a"].outcome is Outcome.CONVERGED and progress["a"].dispatched
    assert progress["b"].outcome is Outcome.PENDING
    assert not progress["c"].dispatched  # another rollout's document
    assert progress["e"].dispatched and progress["e"].outcome is Outcome.PENDING  # written, not echoed yet
    late = classify(rollout, status, desired, reported, {}, now=1100.0)
    assert late["b"].outcome is Outcome.FAILED and "not converged after 60s" in late["b"].reason
    assert late["d"].outcome is Outcome.PENDING  # offline: it converges when it returns, never timed out
    assert serving_target({"serving": {"digest": D1}}, {"ref": f"{REF}@{D1}"}) == ModelTarget(REF, D1)
    assert serving_target({}, None) is None


def write_profile(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


PROFILE = """current_context = "prod"

[contexts.prod]
broker = "mqtts://broker.example:8883"
ca_file = "certs/ca.crt"
cert = "~/op.crt"
registry_insecure = false

[contexts.lab]
broker = "mqtt://127.0.0.1:1883"
prefix = "lab"
password = "secret"
registry_insecure = true
"""


def args(**values: object) -> argparse.Namespace:
    names = ("broker", "prefix", "username", "password", "ca_file", "cert", "key", "registry_insecure")
    return argparse.Namespace(**{n: values.get(n) for n in names}, context=values.get("context"),
                              global_context=values.get("global_context"))


def test_flags_beat_environment_beat_context_beat_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in [k for k in os.environ if k.startswith("EDGE_")]:
        monkeypatch.delenv(name)
    assert resolve(args()).broker == "mqtt://127.0.0.1:1883"  # no file: the defaults
    path = write_profile(tmp_path / "edgectl" / "config.toml", PROFILE)
    got = resolve(args())
    assert got.broker == "mqtts://broker.example:8883" and got.prefix == "edge" and got.registry_insecure is False
    assert got.ca_file == path.parent / "certs/ca.crt" and got.cert == Path.home() / "op.crt"
    assert resolve(args(context="lab")).prefix == "lab"
    assert resolve(args(global_context="lab")).registry_insecure is True
    monkeypatch.setenv("EDGE_CONTEXT", "lab")
    assert resolve(args()).broker == "mqtt://127.0.0.1:1883"
    monkeypatch.setenv("EDGE_BROKER", "mqtt://env.example:1883")
    monkeypatch.setenv("EDGE_REGISTRY_INSECURE", "no")
    got = resolve(args())
    assert got.broker == "mqtt://env.example:1883" and got.prefix == "lab" and got.registry_insecure is False
    assert resolve(args(broker="mqtt://flag.example")).broker == "mqtt://flag.example"
    monkeypatch.setenv("EDGE_REGISTRY_INSECURE", "maybe")
    with pytest.raises(ProfileError, match="EDGE_REGISTRY_INSECURE='maybe': must be true or false"):
        resolve(args())


def test_bad_profiles_are_refused_naming_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_CONTEXT", raising=False)
    path = tmp_path / "config.toml"
    write_profile(path, PROFILE, mode=0o644)
    with pytest.raises(ProfileError, match=r"holds a password and is readable by others \(mode 0644\); run `chmod 600"):
        load(path)
    cases = (('current_context = "nope"\n', r"names no \[contexts.nope\]"),
             ("[contexts.a]\nbrokr = 'x'\n", r"contexts.a: unknown key\(s\) \['brokr'\]"),
             ("[contexts.a]\nregistry_insecure = 'yes'\n", "contexts.a.registry_insecure: must be true or false"),
             ("[contexts.a]\nbroker = 5\n", "contexts.a.broker: must be a non-empty string"),
             ("colour = 1\n", r"unknown key\(s\) \['colour'\]"), ("[contexts\n", "not valid TOML"))
    for text, message in cases:
        write_profile(path, text)
        with pytest.raises(ProfileError, match=message):
            load(path)
    write_profile(path, PROFILE)
    with pytest.raises(ProfileError, match=r"context 'staging' is not in .* \(contexts: lab, prod\)"):
        load(path).context("staging")


ANCHORED = '{"registry": {"ref": "evil.example/models/colour:stable"}, "mqtt": {"url": "mqtts://evil.example"}, ' \
    '"results": {"min_score": 0.2}}'


@pytest.mark.parametrize("command", [("fleet", "rollout", "start", "--id", "r-9"), ("fleet", "desired", "set", "gate-01")])
def test_config_with_trust_anchors_is_refused_before_the_broker_or_registry_is_asked(
        command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    # --model would ask the registry and --broker names a port where nothing listens: the refusal comes first
    args = [*command, "--config", ANCHORED, "--model", "127.0.0.1:9/models/colour:2", "--broker", "mqtt://127.0.0.1:9"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert err.startswith("edgectl: --config: mqtt.url, registry.ref are trust anchors, which every device refuses "
                          "from desired state"), err
    assert "`edgectl trust sign config --key FLEET_ROOT_KEY --device DEVICE --patch PATCH`" in err


def test_config_anchors_are_found_wherever_the_values_name_them() -> None:
    for values, anchors in [
        ('{"cameras": {"door": {"source": "gst:filesrc location=/etc/shadow ! appsink"}}}', "cameras.*.source is"),
        ('{"cameras": {"door": {"fps": 2, "gate": {"threshold": 4}}}, "spool": {"path": "/tmp/x"}}', "spool.path is"),
        ('{"trust": {"root_key": "/tmp/k.pub"}, "device_id": "other"}', "device_id, trust.root_key are"),
        ('{"console": {"enabled": true}}', "console.enabled is"),
    ]:
        with pytest.raises(UsageError, match=rf"^--config: {re.escape(anchors)} "):
            config_option(values)
    # settings a device applies from desired state pass as they were given
    fine = {"results": {"min_score": 0.2}, "cameras": {"door": {"fps": 2, "rois": [{"name": "a", "x": 0, "y": 0,
                                                                                    "w": 8, "h": 8}]}}}
    assert config_option(json.dumps(fine)) == fine
    # a whole cameras array may or may not change a source: the device, which knows its cameras, decides
    whole = {"cameras": [{"name": "door", "source": "/dev/video0"}]}
    assert config_option(json.dumps(whole)) == whole

