"""edge-model-server's model config file: parsing, TF Serving's refusals, policies and labels from it,
and the watcher that applies edits (TF Serving's own test models, copied into tmp dirs)."""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from edge.model_server import (
    All,
    Latest,
    ModelConfigError,
    ModelConfigWatcher,
    ModelSource,
    ServableState,
    ServingError,
    Specific,
    load_model_config_file,
    sources_from_flags,
    sources_from_proto,
)
from edge.serving.protos import messages, parse_text_config
from tests.support.paths import TFSERVING_TESTDATA
from tests.support.servables import copy_model, predict, states
from tests.support.waits import wait_until


def good_config_text(tmp_path: Path) -> str:
    text = (TFSERVING_TESTDATA / "good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(copy_model(tmp_path, "saved_model_half_plus_two_cpu")))
    return text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(copy_model(tmp_path, "saved_model_half_plus_three")))


def test_model_config_file(tmp_path: Path, servable_managers) -> None:
    path = tmp_path / "models.config"
    path.write_text(good_config_text(tmp_path))
    sources = load_model_config_file(path)
    assert [(s.name, s.base_path.name, s.policy, s.platform) for s in sources] == [
        ("half_plus_two", "saved_model_half_plus_two_cpu", Latest(1), "tensorflow"),
        ("half_plus_three", "saved_model_half_plus_three", Latest(1), "tensorflow"),
    ]
    manager = servable_managers()
    manager.set_models(sources)
    assert predict(manager, "half_plus_two") == (123, 3.0)
    assert predict(manager, "half_plus_three") == (123, 4.0)

    with pytest.raises(ModelConfigError, match=r"bad_model_config\.txt: line 1, column \d+") as info:
        load_model_config_file(TFSERVING_TESTDATA / "bad_model_config.txt")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelConfigError, match="cannot read"):
        load_model_config_file(tmp_path / "absent.config")


@pytest.mark.parametrize(
    "text, message",
    [
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "tensorflow" } '
         'config { name: "a" base_path: "/n" model_platform: "tensorflow" } }',
         "Illegal to list model a multiple times in config list"),
        ('model_config_list { config { name: "a" base_path: "models/a" model_platform: "tensorflow" } }',
         "Expected model a to have an absolute path or URI; got base_path()=models/a"),
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "pytorch" } }',
         "Model a requests unsupported platform pytorch"),
        ('model_config_list { config { name: "a" base_path: "/m" } }',
         "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
         "ModelServerConfig::model_platform."),
        ('custom_model_config { }', "ModelServer does not yet support custom model config."),
    ],
)
def test_model_config_content_errors(text: str, message: str) -> None:
    with pytest.raises(ServingError) as info:
        sources_from_proto(parse_text_config(text, "ModelServerConfig"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == message


def test_model_config_policies_labels_and_flags() -> None:
    config = parse_text_config(
        """model_config_list {
             config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
                      model_version_policy { specific { versions: 2 versions: 1 } }
                      version_labels { key: "stable" value: 1 } }
             config { name: "b" base_path: "file:///m/b" model_platform: "tensorflow"
                      model_version_policy { all { } } }
             config { name: "c" base_path: "/m/c" model_platform: "tensorflow"
                      model_version_policy { latest { num_versions: 2 } } } }""",
        "ModelServerConfig",
    )
    a, b, c = sources_from_proto(config)
    assert a.policy == Specific((1, 2)) and dict(a.labels) == {"stable": 1}
    assert b.policy == All() and b.base_path == Path("/m/b")
    assert c.policy == Latest(2)
    assert sources_from_proto(messages().ModelServerConfig()) == []
    assert sources_from_flags("default", "/models/x") == [ModelSource("default", Path("/models/x"))]
    with pytest.raises(ServingError, match="absolute path"):
        sources_from_flags("default", "models/x")


def test_config_watcher_applies_edits_and_ignores_bad_files(tmp_path: Path, servable_managers) -> None:
    path = tmp_path / "models.config"
    text = good_config_text(tmp_path)
    path.write_text(text)
    manager = servable_managers()
    manager.set_models(load_model_config_file(path))
    watcher = ModelConfigWatcher(path, 0.1, manager)
    watcher.start()
    try:
        # Remove half_plus_three from the file: it is unloaded, half_plus_two keeps serving.
        only_two = text[: text.index("  config: {\n    name: \"half_plus_three\"")].rstrip().rstrip(",") + "\n}\n"
        path.write_text(only_two)
        wait_until(lambda: manager.model_names() == ["half_plus_two"], 120, message="only half_plus_two configured")
        wait_until(lambda: states(manager, "half_plus_three") == {123: ServableState.END}, 120, message="half_plus_three unloaded (END)")
        with pytest.raises(ServingError, match=r"Latest\(half_plus_three\)"):
            predict(manager, "half_plus_three")
        # A broken file is logged and ignored.
        path.write_text("improperly formatted file")
        wait_until(lambda: watcher.errors == 1, 120, message="the broken file counted as one watcher error")
        assert predict(manager, "half_plus_two") == (123, 3.0)
        # Put it back: half_plus_three loads again.
        path.write_text(text)
        wait_until(lambda: manager.model_names() == ["half_plus_three", "half_plus_two"], 120, message="both models configured again")
        assert manager.wait_available("half_plus_three", timeout_s=120)
        assert predict(manager, "half_plus_three") == (123, 4.0)
    finally:
        watcher.stop()
