"""`edgectl model package|push|promote|ls` and `edgectl keys gen` on a real Keras model and registry."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.model_server.warmup import read_records
from edge.models.artifact.pull import pull_model
from edge.models.artifact.signing import load_model_public_key
from edge.models.golden import load_golden, mismatch
from edge.models.store import ModelVersion
from edge.serving.base import softmax
from edge.serving.candidates import convert_saved_model
from edge.serving.embedded import EmbeddedClassifier
from edge.serving.litert import LiteRTModel
from edge.serving.preprocess import FramePreprocessor
from edge.transport.oci import referrers_tag
from edge.util.ociref import Reference
from provisioning import modelconvert
from provisioning.cli import main
from tests.support.models import COLOUR_LABELS, build_colour_model
from tests.support.packages import build_colour_variant, make_version

SOLID = {"red": (90, 90, 150), "green": (90, 150, 90), "blue": (150, 90, 90)}  # BGR, tinted: scores ~0.98, not 1.0


@pytest.fixture(scope="module")
def colour_savedmodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_model(tmp_path_factory.mktemp("sm") / "colour")


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("golden")
    for name, bgr in SOLID.items():
        image = np.zeros((60, 80, 3), dtype=np.uint8)
        image[:] = bgr
        assert cv2.imwrite(str(folder / f"{name}.png" if name != "blue" else folder / f"{name}.jpg"), image)
    return folder


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("\n".join(COLOUR_LABELS) + "\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, fragment: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err, err


def package_args(savedmodel: Path, out: Path, labels: Path, golden: Path, *extra: object) -> list[object]:
    return ["model", "package", savedmodel, "--name", "colour", "--version", "1", "--labels", labels,
            "--golden", golden, "--activation", "softmax", "--out", out, *extra]


def test_package_push_promote_ls_and_pull(capsys, tmp_path: Path, registry, colour_savedmodel: Path,
                                          golden_dir: Path, labels_file: Path) -> None:
    out = tmp_path / "colour" / "1"
    code, stdout, err = run(capsys, *package_args(colour_savedmodel, out, labels_file, golden_dir))
    assert code == 0, err
    extra = out / "assets.extra"
    assert (extra / "labels.txt").read_text().split() == list(COLOUR_LABELS)
    edge_json = json.loads((extra / "edge.json").read_text())
    assert edge_json["output"] == {"name": "logits", "activation": "softmax"} and edge_json["golden"] == 3
    model_json = json.loads((extra / "model.json").read_text())
    assert model_json["input"] == {"name": "image", "dtype": "uint8", "shape": [-1, 64, 64, 3]}
    assert (model_json["name"], model_json["version"], model_json["labels"]) == ("colour", 1, 3)
    reference = json.loads((extra / "golden" / "reference.json").read_text())
    assert {i["file"]: i["top1"] for i in reference["images"]} == {"blue.jpg": 2, "green.png": 1, "red.png": 0}
    assert all(0.9 < max(i["scores"]) < 0.999 for i in reference["images"])
    assert len(list(read_records(extra / "tf_serving_warmup_requests"))) == 3

    keys = tmp_path / "keys"
    code, stdout, err = run(capsys, "keys", "gen", "--out", keys)
    assert code == 0 and stdout.startswith("key id ")
    kid = stdout.split()[2]
    ref = f"{registry.address}/models/colour"
    code, stdout, err = run(capsys, "model", "push", out, f"{ref}:1", "--sign-key", keys / "signing.key", "--insecure")
    assert code == 0, err
    digest = stdout.strip()
    assert digest.startswith("sha256:") and len(digest) == 71
    code, stdout, err = run(capsys, "model", "promote", ref, "1", "--channel", "stable", "--insecure",
                            "--lifetime", "7d", "--sign-key", keys / "signing.key")
    assert code == 0, err
    assert stdout.strip() == f"{ref}:stable -> {digest} (version 1)"
    assert "valid for 7d" in err
    client = registry.client()
    assert client.list_tags("models/colour") == ["1", referrers_tag(digest), "stable"]

    code, stdout, err = run(capsys, "model", "ls", ref, "--insecure")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line.strip()[:1] in ("1", "s")}
    assert rows["1"][1:5] == ["version", "1", digest[:19], "model-signing"]
    assert rows["stable"][1:5] == ["channel", "1", digest[:19], "model-signing"]
    assert rows["stable"][5].endswith("Z") and rows["stable"][5] > model_json["created"]  # the statement's expiry
    assert model_json["created"] in rows["stable"]

    pulled = pull_model(client, Reference.parse(f"{ref}:stable"), tmp_path / "staging",
                        public_key=load_model_public_key(keys / "signing.pub"))
    assert pulled.digest == digest and pulled.signed_by == kid and pulled.version == 1
    classifier = EmbeddedClassifier(ModelVersion("colour", 1, pulled.path))
    pre = FramePreprocessor(classifier.info.image_input, classifier.info.metadata.preprocess)
    golden = load_golden(pulled.path)
    assert [g.file for g in golden] == ["blue.jpg", "green.png", "red.png"]
    for item in golden:
        scores = classifier.classify(pre.batch_to_input(pre.to_model_pixels(item.image_bgr)[None]))[0]
        assert mismatch(item, scores) is None
        assert mismatch(item, np.roll(scores, 1)) is not None  # a different model would be caught


def test_package_litert_variant_carries_a_checked_model_tflite(capsys, tmp_path: Path, colour_savedmodel: Path,
                                                               golden_dir: Path, labels_file: Path, monkeypatch) -> None:
    """`--variant any:litert` converts the SavedModel to model.tflite and checks it on the golden images;
    a conversion that answers differently is refused with the images named, and nothing is written."""
    out = tmp_path / "litert" / "1"
    code, stdout, err = run(capsys, *package_args(colour_savedmodel, out, labels_file, golden_dir,
                                                  "--variant", "any:litert"))
    assert code == 0, err
    assert "with model.tflite" in stdout
    info = EmbeddedClassifier(ModelVersion("colour", 1, out)).info
    pre = FramePreprocessor(info.image_input, info.metadata.preprocess)
    model = LiteRTModel(out / "model.tflite", output_name="logits")
    for item in load_golden(out):
        scores = softmax(model.run(pre.batch_to_input(pre.to_model_pixels(item.image_bgr)[None])))[0]
        assert mismatch(item, scores) is None

    wrong = build_colour_variant(tmp_path / "wrong", "permuted")  # red -> "green": a broken converter
    monkeypatch.setattr(modelconvert, "convert_saved_model", lambda folder: convert_saved_model(wrong))
    refused = tmp_path / "refused" / "1"
    code, _, err = run(capsys, *package_args(colour_savedmodel, refused, labels_file, golden_dir, "--tflite"))
    assert code == 2
    assert_one_line_error(err, "the LiteRT conversion does not reproduce TensorFlow on 3 of 3 image(s)")
    assert not refused.exists()


def test_package_refuses_bad_input(capsys, tmp_path: Path, colour_savedmodel: Path, golden_dir: Path,
                                   labels_file: Path) -> None:
    out = tmp_path / "out"
    cases: list[tuple[list[object], str]] = []
    cases.append((package_args(tmp_path, out, labels_file, golden_dir), "not a SavedModel directory"))
    two_labels = tmp_path / "two.txt"
    two_labels.write_text("a\nb\n")
    cases.append((package_args(colour_savedmodel, out, two_labels, golden_dir), "2 labels but output 'logits' has 3"))
    (tmp_path / "empty").mkdir()
    cases.append((package_args(colour_savedmodel, out, labels_file, tmp_path / "empty"), "holds no .jpg/.jpeg/.png"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cat.jpg").write_bytes(b"not a jpeg")
    cases.append((package_args(colour_savedmodel, out, labels_file, broken), "cat.jpg: not a readable JPEG/PNG"))
    cases.append((package_args(colour_savedmodel, out, labels_file, golden_dir, "--output-name", "nope"),
                  "names output 'nope'"))
    cases.append((package_args(colour_savedmodel, out, labels_file, golden_dir, "--preprocess", "color=XYZ"),
                  "color must be RGB or BGR"))
    cases.append((package_args(colour_savedmodel, out, labels_file, golden_dir, "--variant", "linux"),
                  "--variant: platform 'linux': expected os/architecture"))
    cases.append((package_args(colour_savedmodel, out, labels_file, golden_dir, "--variant", "any"),
                  "name a platform (linux/arm64), an accelerator (any:litert), or both"))
    for argv, fragment in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, (fragment, err)
        assert_one_line_error(err, fragment)
        assert not out.exists()
    out.mkdir()
    code, _, err = run(capsys, *package_args(colour_savedmodel, out, labels_file, golden_dir))
    assert code == 2
    assert_one_line_error(err, "already exists; pass --force")
    code, _, err = run(capsys, *package_args(colour_savedmodel, out, labels_file, golden_dir, "--force",
                                             "--variant", "linux/aarch64:litert"))
    assert code == 0 and (out / "assets.extra" / "model.json").is_file()
    model_json = json.loads((out / "assets.extra" / "model.json").read_text())
    assert model_json["variant"] == {"platform": "linux/arm64", "accelerator": "litert"}
    for version in ("0", "abc", "-1"):
        with pytest.raises(SystemExit) as exc:
            main(["model", "package", str(colour_savedmodel), "--name", "colour", "--version", version])
        assert exc.value.code == 2
        assert "version must be a positive integer" in capsys.readouterr().err


def test_package_refuses_models_that_are_not_image_classifiers(capsys, tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    from tools.savedmodel_export import export_serving

    features = keras.Input(shape=(4,), dtype="float32", name="features")
    model = keras.Model(features, keras.layers.Dense(2)(features))
    export_serving(model, tmp_path / "tabular", "features", [None, 4], "float32", "scores")
    code, _, err = run(capsys, "model", "package", tmp_path / "tabular", "--name", "t", "--version", "1",
                       "--out", tmp_path / "o1")
    assert code == 2
    assert_one_line_error(err, "must take exactly one image tensor")

    module = tf.Module()
    module.f = tf.function(lambda x: x * 2, input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "nosig"), signatures={})
    code, _, err = run(capsys, "model", "package", tmp_path / "nosig", "--name", "t", "--version", "1",
                       "--out", tmp_path / "o2")
    assert code == 2
    assert_one_line_error(err, "serving_default")


def test_push_promote_ls_errors(capsys, tmp_path: Path, basic_registry, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    version = make_version(tmp_path / "fake" / "1", version=1)
    ref = f"{basic_registry.address}/models/fake"
    code, _, err = run(capsys, "model", "push", version, "models/fake:1", "--insecure")
    assert code == 2
    assert_one_line_error(err, "not a registry host")
    code, _, err = run(capsys, "model", "push", version, ref, "--insecure")
    assert code == 2
    assert_one_line_error(err, "name the tag to push")
    code, _, err = run(capsys, "model", "push", version, f"{ref}:1", "--insecure")
    assert code == 1
    assert_one_line_error(err, f"registry {basic_registry.address}: not authorised")
    code, _, err = run(capsys, "model", "push", version, f"{ref}:1", "--insecure", "--username", "edge",
                       "--password", "wrong")
    assert code == 1
    assert_one_line_error(err, "credentials were refused")
    code, _, err = run(capsys, "model", "push", version, "127.0.0.1:1/models/fake:1", "--insecure")
    assert code == 1
    assert_one_line_error(err, "cannot connect to registry 127.0.0.1:1")

    key = tmp_path / "keys"
    assert run(capsys, "keys", "gen", "--out", key)[0] == 0
    (key / "signing.key").chmod(0o644)
    code, _, err = run(capsys, "model", "push", version, f"{ref}:1", "--insecure", "--sign-key", key / "signing.key")
    assert code == 2
    assert_one_line_error(err, "readable by group/others")

    env = {"EDGE_REGISTRY_USERNAME": "edge", "EDGE_REGISTRY_PASSWORD": "s3cret"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        code, stdout, err = run(capsys, "model", "push", version, f"{ref}:1", "--insecure")
        assert code == 0, err
        code, _, err = run(capsys, "model", "promote", ref, "7", "--channel", "canary", "--insecure")
        assert code == 1
        assert_one_line_error(err, "models/fake:7 not found")
        code, _, err = run(capsys, "model", "promote", ref, "1", "--channel", "12", "--insecure")
        assert code == 2
        assert_one_line_error(err, "non-numeric tag")
        code, _, err = run(capsys, "model", "promote", ref, "1", "--channel", "canary", "--insecure", "--lifetime", "7d")
        assert code == 2
        assert_one_line_error(err, "--lifetime needs --sign-key")
        code, _, err = run(capsys, "model", "promote", ref, "1", "--channel", "canary", "--insecure", "--lifetime",
                           "7 days", "--sign-key", key / "signing.key")
        assert code == 2
        assert_one_line_error(err, "--lifetime '7 days': use a number with s, m, h or d")
        code, stdout, err = run(capsys, "model", "ls", ref, "--insecure")
        assert code == 0 and "no" in stdout.split()
    code, _, err = run(capsys, "model", "ls", ref, "--insecure")
    assert code == 1
    assert_one_line_error(err, "not authorised")


def test_keys_gen_file_modes(capsys, tmp_path: Path) -> None:
    code, stdout, _ = run(capsys, "keys", "gen", "--out", tmp_path / "k")
    assert code == 0
    private, public = tmp_path / "k" / "signing.key", tmp_path / "k" / "signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert len(stdout.split()[2]) == 64
    code, _, err = run(capsys, "keys", "gen", "--out", tmp_path / "k")
    assert code == 2
    assert_one_line_error(err, "already exists; pass --force")
    assert run(capsys, "keys", "gen", "--out", tmp_path / "k", "--force")[0] == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_registry_settings_come_from_the_operator_context(capsys, tmp_path: Path, basic_registry, monkeypatch) -> None:
    """`edgectl model` takes the registry settings it is not given (flags, then EDGE_REGISTRY_*) from the
    operator context (--context, EDGE_CONTEXT, current_context), as the fleet commands do."""
    for name in ("EDGE_CONTEXT", "EDGE_REGISTRY_USERNAME", "EDGE_REGISTRY_PASSWORD", "EDGE_REGISTRY_INSECURE",
                 "EDGE_REGISTRY_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    profile = tmp_path / "edgectl.toml"
    profile.write_text('current_context = "prod"\n[contexts.prod]\nbroker = "mqtts://broker.example:8883"\n'
                       '[contexts.lab]\nregistry_insecure = true\nregistry_username = "edge"\n'
                       'registry_password = "s3cret"\n')
    profile.chmod(0o600)
    monkeypatch.setenv("EDGECTL_CONFIG", str(profile))
    version = make_version(tmp_path / "fake" / "1", version=1)
    ref = f"{basic_registry.address}/models/fake"

    code, _, err = run(capsys, "model", "push", version, f"{ref}:1")  # prod: no registry settings, so HTTPS
    assert code == 1
    assert_one_line_error(err, "TLS error")
    code, _, err = run(capsys, "model", "push", version, f"{ref}:1", "--context", "lab")
    assert code == 0, err
    code, stdout, err = run(capsys, "--context", "lab", "model", "ls", ref)  # edgectl's global --context
    assert code == 0 and "1" in stdout.split(), err
    monkeypatch.setenv("EDGE_CONTEXT", "lab")
    assert run(capsys, "model", "ls", ref)[0] == 0
    code, _, err = run(capsys, "model", "ls", ref, "--password", "wrong")  # a flag wins over the context
    assert code == 1
    assert_one_line_error(err, "credentials were refused")
    monkeypatch.setenv("EDGE_REGISTRY_USERNAME", "someone")  # EDGE_REGISTRY_* wins over the context
    code, _, err = run(capsys, "model", "ls", ref)
    assert code == 1
    assert_one_line_error(err, "credentials were refused")
    code, _, err = run(capsys, "model", "ls", ref, "--context", "nope")
    assert code == 2
    assert_one_line_error(err, "context 'nope' is not in")
