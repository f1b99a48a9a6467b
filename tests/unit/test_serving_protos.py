"""edge.serving.protos against the official tensorflow-serving-api descriptors (same process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import any_pb2, descriptor_pool

# The official client (pip install --no-deps tensorflow-serving-api) is the reference.
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_service_pb2,
    prediction_log_pb2,  # noqa: F401  (registers PredictionLog for the schema check)
    prediction_service_pb2,
)
from tensorflow_serving.apis import predict_pb2 as official
from tensorflow_serving.config import model_server_config_pb2

from edge.serving import protos
from edge.serving.protos import _compile
from tests.support.paths import REPO, TFSERVING_TESTDATA

MESSAGES = ["TensorProto", "TensorShapeProto", "TensorShapeDim", "ResourceHandleProto", "VariantTensorDataProto", "Example", "Features", "Feature", "BytesList", "FloatList", "Int64List", "ModelSpec", "PredictRequest", "PredictResponse", "ClassificationRequest", "ClassificationResponse", "ClassificationResult", "Classifications", "Class", "RegressionRequest", "RegressionResponse", "RegressionResult", "Regression", "Input", "ExampleList", "ExampleListWithContext", "MultiInferenceRequest", "MultiInferenceResponse", "InferenceTask", "InferenceResult", "GetModelMetadataRequest", "GetModelMetadataResponse", "SignatureDefMap", "SignatureDef", "TensorInfo", "GetModelStatusRequest", "GetModelStatusResponse", "ModelVersionStatus", "StatusProto", "ReloadConfigRequest", "ReloadConfigResponse", "ModelServerConfig", "ModelConfig", "ModelConfigList", "FileSystemStoragePathSourceConfig", "ServableVersionPolicy", "LoggingConfig", "MonitoringConfig", "PrometheusConfig", "BatchingParameters"]

# Fields deliberately not vendored (see edge/serving/protos/README.md).
TRIMMED_FIELDS = {
    "tensorflow.TensorInfo": {"coo_sparse", "composite_tensor"},
    "tensorflow.serving.PredictionLog": {"log_metadata", "session_run_log"},
}


@pytest.fixture(scope="module")
def pb() -> protos.ProtoMessages:
    return protos.messages()


@pytest.mark.parametrize("name", MESSAGES)
def test_message_class_exists(pb: protos.ProtoMessages, name: str) -> None:
    cls = getattr(pb, name)
    assert cls().DESCRIPTOR.name == name.replace("TensorShapeDim", "Dim")


def test_enums(pb: protos.ProtoMessages) -> None:
    assert pb.DataType.Value("DT_FLOAT") == pb.DT_FLOAT == 1
    assert pb.DataType.Name(4) == "DT_UINT8" and protos.DT_UINT8 == 4
    assert pb.Code.Name(5) == "NOT_FOUND" and pb.FAILED_PRECONDITION == 9
    assert pb.ModelVersionStatus.State.Value("AVAILABLE") == pb.ModelVersionStatus.AVAILABLE == 30
    policy = pb.ServableVersionPolicy(specific={"versions": [1, 2]})
    assert policy.WhichOneof("policy_choice") == "specific"


def _predict_request(pb: protos.ProtoMessages):
    req = pb.PredictRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.version.value = 123
    req.model_spec.signature_name = "serving_default"
    tensor = req.inputs["x"]
    tensor.dtype = pb.DT_FLOAT
    tensor.tensor_shape.dim.add().size = 3
    tensor.float_val.extend([1.0, 2.0, 5.0])
    req.output_filter.append("y")
    return req


def test_predict_request_round_trips_with_official(pb: protos.ProtoMessages) -> None:
    ours = _predict_request(pb)
    data = ours.SerializeToString(deterministic=True)
    theirs = official.PredictRequest.FromString(data)
    assert theirs.model_spec.version.value == 123
    assert list(theirs.inputs["x"].float_val) == [1.0, 2.0, 5.0]
    assert theirs.SerializeToString(deterministic=True) == data

    theirs.model_spec.version_label = "stable"  # replaces version (oneof)
    back = pb.PredictRequest.FromString(theirs.SerializeToString(deterministic=True))
    assert back.model_spec.WhichOneof("version_choice") == "version_label"
    assert back.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)


def test_any_type_url_matches_official(pb: protos.ProtoMessages) -> None:
    sig_map = pb.SignatureDefMap()
    sig = sig_map.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["x"].name = "x:0"
    sig.inputs["x"].dtype = pb.DT_FLOAT
    response = pb.GetModelMetadataResponse()
    response.model_spec.name = "m"
    response.metadata["signature_def"].Pack(sig_map)

    theirs = get_model_metadata_pb2.GetModelMetadataResponse.FromString(response.SerializeToString())
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert theirs.metadata["signature_def"].Unpack(unpacked)
    assert unpacked.signature_def["serving_default"].inputs["x"].name == "x:0"
    assert isinstance(theirs.metadata["signature_def"], any_pb2.Any)


def test_private_pool_leaves_default_pool_alone(pb: protos.ProtoMessages) -> None:
    default = descriptor_pool.Default()
    assert pb.pool is not default
    ours = pb.PredictRequest.DESCRIPTOR
    theirs = default.FindMessageTypeByName("tensorflow.serving.PredictRequest")
    assert ours is not theirs and theirs is official.PredictRequest.DESCRIPTOR
    assert ours.file.pool is pb.pool
    assert official.PredictRequest().model_spec.name == ""  # official classes still work


@pytest.mark.slow
def test_ours_first_then_official_in_a_fresh_process() -> None:
    code = (
        "from edge.serving.protos import messages\n"
        "pb = messages(); r = pb.PredictRequest(); r.model_spec.name = 'a'\n"
        "from tensorflow_serving.apis import predict_pb2\n"
        "o = predict_pb2.PredictRequest.FromString(r.SerializeToString())\n"
        "assert o.model_spec.name == 'a', o\n"
        "assert messages().PredictRequest.FromString(o.SerializeToString()).model_spec.name == 'a'\n"
        "print('both ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "both ok" in proc.stdout


def _fields(desc) -> dict[str, tuple]:
    return {
        f.name: (f.number, f.type, f.is_repeated, f.has_presence, f.message_type and f.message_type.full_name,
                 f.enum_type and f.enum_type.full_name, f.containing_oneof and f.containing_oneof.name)
        for f in desc.fields
    }


def _walk(desc):
    yield desc
    for nested in desc.nested_types:
        yield from _walk(nested)


def test_every_message_matches_official_schema(pb: protos.ProtoMessages) -> None:
    default = descriptor_pool.Default()
    compared = set()
    for fd in pb.files.values():
        if fd.package.startswith("google.protobuf"):
            continue
        for top in fd.message_types_by_name.values():
            for desc in _walk(top):
                try:
                    theirs = default.FindMessageTypeByName(desc.full_name)
                except KeyError:
                    continue  # not in tensorflow-serving-api (BatchingParameters, MonitoringConfig)
                ours_f, theirs_f = _fields(desc), _fields(theirs)
                missing = set(theirs_f) - set(ours_f) - TRIMMED_FIELDS.get(desc.full_name, set())
                assert not missing, f"{desc.full_name} lacks {missing}"
                for name, spec in ours_f.items():
                    assert theirs_f.get(name) == spec, f"{desc.full_name}.{name}: {spec} != {theirs_f.get(name)}"
                compared.add(desc.full_name)
    expected = {f"tensorflow.serving.{n}" for n in ("PredictRequest", "ModelConfig", "ReloadConfigResponse")}
    assert expected | {"tensorflow.TensorProto", "tensorflow.SignatureDef", "tensorflow.Example"} <= compared
    for enum in ("tensorflow.DataType", "tensorflow.error.Code", "tensorflow.serving.ModelType"):
        ours_e = {v.name: v.number for v in pb.enum_descriptor(enum).values}
        theirs_e = {v.name: v.number for v in default.FindEnumTypeByName(enum).values}
        assert ours_e == theirs_e, enum


def test_rpc_table_matches_official_services(pb: protos.ProtoMessages) -> None:
    official_rpcs = {}
    for module, service in ((prediction_service_pb2, "PredictionService"), (model_service_pb2, "ModelService")):
        sd = module.DESCRIPTOR.services_by_name[service]
        for m in sd.methods:
            official_rpcs[f"/{sd.full_name}/{m.name}"] = (sd.full_name, m.input_type.full_name, m.output_type.full_name)
    ours = {}
    for path, (service, req, resp) in protos.RPCS.items():
        ours[path] = (service, pb.get(req).DESCRIPTOR.full_name, pb.get(resp).DESCRIPTOR.full_name)
    assert ours == official_rpcs
    for service in (protos.PREDICTION_SERVICE, protos.MODEL_SERVICE):
        sd = pb.pool.FindServiceByName(service)
        assert {f"/{service}/{m.name}" for m in sd.methods} == {p for p in protos.RPCS if p.startswith(f"/{service}/")}
    req_cls, resp_cls = protos.rpc_types("/tensorflow.serving.PredictionService/Predict")
    assert (req_cls, resp_cls) == (pb.PredictRequest, pb.PredictResponse)
    with pytest.raises(KeyError, match="unknown TF Serving method"):
        protos.rpc_types("/tensorflow.serving.PredictionService/Nope")


def test_parse_good_model_config() -> None:
    text = (TFSERVING_TESTDATA / "good_model_config.txt").read_text()
    config = protos.parse_text_config(text, "ModelServerConfig")
    models = config.model_config_list.config
    assert [(m.name, m.base_path, m.model_platform) for m in models] == [
        ("half_plus_two", "${TEST_HALF_PLUS_TWO_DIR}", "tensorflow"),
        ("half_plus_three", "${TEST_HALF_PLUS_THREE_DIR}", "tensorflow"),
    ]
    theirs = model_server_config_pb2.ModelServerConfig.FromString(config.SerializeToString())
    assert theirs.model_config_list.config[1].name == "half_plus_three"


def test_parse_batching_and_monitoring_config() -> None:
    batching = protos.parse_text_config((TFSERVING_TESTDATA / "batching_config.txt").read_text(), "BatchingParameters")
    assert batching.max_batch_size.value == 128
    assert batching.HasField("batch_timeout_micros") and batching.batch_timeout_micros.value == 0
    assert batching.max_enqueued_batches.value == 1000000
    assert batching.num_batch_threads.value == 8
    assert not batching.HasField("thread_pool_name")
    monitoring = protos.parse_text_config((TFSERVING_TESTDATA / "monitoring_config.txt").read_text(), "MonitoringConfig")
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_bad_model_config_is_one_clear_line() -> None:
    text = (TFSERVING_TESTDATA / "bad_model_config.txt").read_text()
    with pytest.raises(protos.ProtoConfigError) as info:
        protos.parse_text_config(text, "ModelServerConfig", source="bad_model_config.txt")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("bad_model_config.txt: line 1, column 1: not a valid ModelServerConfig text proto")
    assert "improperly" in message


def test_parse_error_reports_later_line() -> None:
    text = 'model_config_list {\n  config {\n    name: "a"\n    base_pth: "/m"\n  }\n}\n'
    with pytest.raises(protos.ProtoConfigError, match=r"line 4, column 5: .*base_pth"):
        protos.parse_text_config(text, "ModelServerConfig")


def test_packaged_descriptor_set_is_used_when_built_from_these_protos(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel carries the set protoc made at build time: no protoc, no cache, no grpcio-tools on a device."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    packaged = (_compile.PROTO_ROOT / _compile.PACKAGED_SET).read_bytes()
    assert (_compile.PROTO_ROOT / _compile.PACKAGED_DIGEST).read_text().strip() == _compile.source_digest()

    def no_protoc(*args, **kwargs):
        raise AssertionError("compiled although the packaged set matches")

    monkeypatch.setattr(_compile, "compile_descriptor_set", no_protoc)
    assert _compile.load_descriptor_set() == packaged and not (tmp_path / "edge").exists()
    assert _compile.packaged_set("0" * 64) is None  # built from other .proto files: not used


def test_descriptor_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout whose .proto files changed since the build compiles once, then reads its cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_compile, "packaged_set", lambda digest: None)
    fresh = _compile.load_descriptor_set()
    cached = _compile.cache_path()
    assert cached.parent == tmp_path / "edge" and cached.read_bytes() == fresh

    def no_protoc(*args, **kwargs):
        raise AssertionError("compiled despite a valid cache")

    monkeypatch.setattr(_compile, "compile_descriptor_set", no_protoc)
    assert _compile.load_descriptor_set() == fresh
    assert protos._build(fresh).PredictRequest.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"


def test_cache_key_follows_proto_contents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in _compile.proto_files():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((_compile.PROTO_ROOT / rel).read_bytes())
    monkeypatch.setattr(_compile, "PROTO_ROOT", tmp_path)
    before = _compile.source_digest()
    assert before == _compile.source_digest()
    model = tmp_path / "tensorflow_serving/apis/model.proto"
    model.write_text(model.read_text() + "\n// edited\n")
    assert _compile.source_digest() != before


def test_broken_proto_gives_protoc_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.proto").write_text('syntax = "proto3";\nmessage A { int32 x = ; }\n')
    monkeypatch.setattr(_compile, "PROTO_ROOT", tmp_path)
    with pytest.raises(_compile.ProtoCompileError, match=r"broken\.proto:2"):
        _compile.compile_descriptor_set()
