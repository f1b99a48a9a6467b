"""edge-model-server as the clients people already have call tensorflow_model_server.

Clients read Predict outputs from the typed fields (`response.outputs["y"].float_val`, as TF
Serving's own test utilities and most tutorials do), decode with `tf.make_ndarray`, send
curl-shaped JSON to the REST API, and serve models written by `tf.saved_model.save`,
`keras.Model.export`, TF1 and the TF Lite converter. Known answers: half_plus_two y = 0.5x + 2.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tfserving"
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"
TIMEOUT = 30.0


def predict(target: str, model: str, inputs: dict[str, np.ndarray], signature: str = "") -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(target) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, TIMEOUT)


# -- Predict answers in the typed fields ------------------------------------------------------------

def test_float_val_from_half_plus_two_over_tcp(model_server_factory) -> None:
    server = model_server_factory("--model_name=half", f"--model_base_path={HALF_PLUS_TWO}")
    response = predict(server.grpc_target, "half", {"x": np.array([[2.0]], np.float32)})
    y = response.outputs["y"]
    assert list(y.float_val) == [3.0]
    assert y.tensor_content == b"" and [d.size for d in y.tensor_shape.dim] == [1, 1]
    np.testing.assert_array_equal(tf.make_ndarray(y), [[3.0]])


def test_float_val_over_the_unix_socket_and_with_a_model_config_file(model_server_factory, tmp_path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "half" base_path: "%s" model_platform: "tensorflow" } }'
                      % HALF_PLUS_TWO)
    socket = tmp_path / "tfs.sock"
    # the Docker entrypoint passes --model_name/--model_base_path too: the config file wins, as in TF Serving
    server = model_server_factory(f"--model_config_file={config}", "--model_name=ignored",
                                  "--model_base_path=/nonexistent", f"--grpc_socket_path={socket}",
                                  wait_models=["half"])
    for target in (server.grpc_target, f"unix:{socket}"):
        response = predict(target, "half", {"x": np.array([[2.0], [4.0]], np.float32)})
        assert list(response.outputs["y"].float_val) == [3.0, 4.0]


def test_tensor_content_is_the_opt_in_tf_serving_has(model_server_factory) -> None:
    server = model_server_factory("--model_name=half", f"--model_base_path={HALF_PLUS_TWO}",
                                  "--enable_serialization_as_tensor_content")
    y = predict(server.grpc_target, "half", {"x": np.array([[2.0]], np.float32)}).outputs["y"]
    assert list(y.float_val) == [] and len(y.tensor_content) == 4
    np.testing.assert_array_equal(tf.make_ndarray(y), [[3.0]])


def test_tflite_model_answers_in_float_val(model_server_factory) -> None:
    base = TESTDATA / "saved_model_half_plus_two_tflite_with_sigdef"
    server = model_server_factory("--model_name=lite", f"--model_base_path={base}", "--prefer_tflite_model")
    response = predict(server.grpc_target, "lite", {"x": np.array([[2.0]], np.float32)})
    assert list(response.outputs["y"].float_val) == [3.0]


@pytest.fixture(scope="module")
def dtype_model(tmp_path_factory) -> Path:
    """A TF2 SavedModel whose outputs cover every dtype TF Serving writes into a typed field."""
    base = tmp_path_factory.mktemp("dtypes") / "dtypes"

    class Dtypes(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"f16": tf.cast(x, tf.float16), "bf16": tf.cast(x, tf.bfloat16), "f64": tf.cast(x, tf.float64),
                    "i8": tf.cast(-x, tf.int8), "u16": tf.cast(x * 1000.0, tf.uint16), "i64": tf.cast(-x, tf.int64),
                    "u32": tf.cast(x, tf.uint32), "u64": tf.cast(x, tf.uint64), "flag": x > 1.0,
                    "c64": tf.complex(x, -x), "c128": tf.complex(tf.cast(x, tf.float64), tf.cast(x, tf.float64)),
                    "text": tf.strings.as_string(x), "scalar": tf.reduce_sum(x)}

    module = Dtypes()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return base


FIELD = {"f16": "half_val", "bf16": "half_val", "f64": "double_val", "i8": "int_val", "u16": "int_val",
         "i64": "int64_val", "u32": "uint32_val", "u64": "uint64_val", "flag": "bool_val", "c64": "scomplex_val",
         "c128": "dcomplex_val", "text": "string_val", "scalar": "float_val"}


def test_every_dtype_is_written_as_tf_serving_writes_it(model_server_factory, dtype_model) -> None:
    server = model_server_factory("--model_name=dtypes", f"--model_base_path={dtype_model}")
    x = np.array([0.5, 1.5, 2.0], np.float32)
    response = predict(server.grpc_target, "dtypes", {"x": x})
    expected = {"f16": x.astype(np.float16), "bf16": tf.cast(x, tf.bfloat16).numpy(), "f64": x.astype(np.float64),
                "i8": (-x).astype(np.int8), "u16": (x * 1000).astype(np.uint16), "i64": (-x).astype(np.int64),
                "u32": x.astype(np.uint32), "u64": x.astype(np.uint64), "flag": x > 1.0,
                "c64": (x - 1j * x).astype(np.complex64), "c128": (x + 1j * x).astype(np.complex128),
                "text": tf.strings.as_string(x).numpy(), "scalar": np.float32(x.sum())}
    assert set(response.outputs) == set(expected)
    for name, want in expected.items():
        proto = response.outputs[name]
        assert proto.tensor_content == b"", name
        assert proto.HasField("tensor_shape"), name
        assert len(getattr(proto, FIELD[name])) > 0, f"{name}: {FIELD[name]} is empty"
        decoded = tf.make_ndarray(proto)
        np.testing.assert_array_equal(decoded, want, err_msg=name)
        # TensorFlow's C++ reader (Tensor::FromProto) reads it the same
        cpp = tf.io.parse_tensor(proto.SerializeToString(), out_type=tf.as_dtype(proto.dtype)).numpy()
        np.testing.assert_array_equal(cpp, want, err_msg=name)
    assert list(response.outputs["f16"].half_val) == [int(v) for v in x.astype(np.float16).view(np.uint16)]
    assert list(response.outputs["c64"].scomplex_val) == [0.5, -0.5, 1.5, -1.5, 2.0, -2.0]
    assert list(response.outputs["text"].string_val) == list(expected["text"])
    assert response.outputs["scalar"].tensor_shape.dim == [] and list(response.outputs["scalar"].float_val) == [4.0]


def test_keras_export_is_served_with_typed_outputs(model_server_factory, tmp_path) -> None:
    keras = tf.keras
    inputs = keras.Input(shape=(3,), name="features")
    outputs = keras.layers.Dense(2, kernel_initializer="ones", bias_initializer="zeros")(inputs)
    model = keras.Model(inputs, outputs)
    model.export(str(tmp_path / "keras" / "1"))
    server = model_server_factory("--model_name=keras", f"--model_base_path={tmp_path / 'keras'}")
    response = predict(server.grpc_target, "keras", {"features": np.array([[1.0, 2.0, 3.0]], np.float32)})
    (output,) = response.outputs.values()
    assert list(output.float_val) == [6.0, 6.0]


# -- Classify / Regress / MultiInference on TF2 predict-method signatures ----------------------------

@pytest.fixture(scope="module")
def tf2_example_model(tmp_path_factory) -> Path:
    """Written by tf.saved_model.save: every signature's method_name is tensorflow/serving/predict, and
    they take serialized tf.Examples as `inputs` and return `scores`/`classes` or `outputs`."""
    base = tmp_path_factory.mktemp("tf2ex") / "tf2ex"
    spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            x = tf.io.parse_example(inputs, spec)["x"]
            scores = tf.concat([tf.sigmoid(-x), tf.sigmoid(x)], axis=1)
            classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1])
            return {"scores": scores, "classes": classes}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": 0.5 * tf.io.parse_example(inputs, spec)["x"] + 2.0}

    module = Model()
    tf.saved_model.save(module, str(base / "1"),
                        signatures={"serving_default": module.classify, "regress": module.regress})
    return base


def example(x: float) -> bytes:
    return tf.train.Example(features=tf.train.Features(
        feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString()


def fill_examples(request, values: list[float]) -> None:
    for v in values:
        request.input.example_list.examples.add().ParseFromString(example(v))


def test_classify_regress_and_multi_inference_on_a_tf2_model(model_server_factory, tf2_example_model) -> None:
    server = model_server_factory("--model_name=ex", f"--model_base_path={tf2_example_model}")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "ex"
        fill_examples(request, [0.0, 2.0])
        result = stub.Classify(request, TIMEOUT).result
        assert [[c.label for c in item.classes] for item in result.classifications] == [["neg", "pos"]] * 2
        assert result.classifications[1].classes[1].score == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)
        request = regression_pb2.RegressionRequest()
        request.model_spec.name, request.model_spec.signature_name = "ex", "regress"
        fill_examples(request, [2.0, 4.0])
        response = stub.Regress(request, TIMEOUT)
        assert [r.value for r in response.result.regressions] == [3.0, 4.0]
        assert response.model_spec.signature_name == "regress" and response.model_spec.version.value == 1
        multi = inference_pb2.MultiInferenceRequest()
        for signature, method in (("serving_default", "tensorflow/serving/classify"),
                                  ("regress", "tensorflow/serving/regress")):
            task = multi.tasks.add()
            task.model_spec.name, task.model_spec.signature_name, task.method_name = "ex", signature, method
        fill_examples(multi, [2.0])
        results = stub.MultiInference(multi, TIMEOUT).results
        assert results[0].classification_result.classifications[0].classes[0].label == "neg"
        assert results[1].regression_result.regressions[0].value == 3.0


def test_method_name_is_checked_only_when_asked(model_server_factory, tf2_example_model) -> None:
    server = model_server_factory("--model_name=ex", f"--model_base_path={tf2_example_model}",
                                  "--enable_signature_method_name_check")
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "ex"
    fill_examples(request, [1.0])
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request, TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == ("Expected classification signature method_name to be "
                                    "tensorflow/serving/classify. Was: tensorflow/serving/predict")


def test_a_signature_of_the_wrong_shape_is_invalid_argument(model_server_factory, tf2_example_model) -> None:
    server = model_server_factory("--model_name=ex", f"--model_base_path={tf2_example_model}")
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "ex"  # serving_default has scores/classes, not `outputs`
    fill_examples(request, [1.0])
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(request, TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("Expected one output Tensor.")


# -- REST, curl-shaped ---------------------------------------------------------------------------------

def test_rest_predict_with_curl_shaped_json(model_server_factory) -> None:
    server = model_server_factory("--model_name=half", f"--model_base_path={HALF_PLUS_TWO}")
    url = f"{server.rest_url}/v1/models/half:predict"
    out = subprocess.run(["curl", "-sS", "-d", '{"instances": [2, 3, 4]}', "-X", "POST", url],
                         capture_output=True, text=True, timeout=60) if _has_curl() else None
    body = out.stdout if out is not None else requests.post(url, data='{"instances": [2, 3, 4]}', timeout=60).text
    assert json.loads(body) == {"predictions": [3.0, 3.5, 4.0]}
    # numbers as TF Serving's WriteDecimal prints them (%g, else %.9g for float32)
    reply = requests.post(url, data='{"instances": [0.3333333333]}', timeout=60)
    assert '"predictions": [2.16666675]' in reply.text.replace("\n", "").replace("  ", " ")


def _has_curl() -> bool:
    try:
        return subprocess.run(["curl", "--version"], capture_output=True, timeout=10).returncode == 0
    except OSError:
        return False


# -- startup errors in TF Serving's words ---------------------------------------------------------------

def test_bad_model_config_file_is_reported_as_tf_serving_reports_it(tmp_path) -> None:
    import sys

    server_bin = Path(sys.executable).with_name("edge-model-server")
    config = tmp_path / "models.config"
    config.write_text('model_config_list {\n  config {\n    name: "m"\n    bogus_field: 1\n  }\n}\n')
    proc = subprocess.run([str(server_bin), f"--model_config_file={config}", "--port=0", "--grpc_socket_path="
                           f"{tmp_path / 's'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert ('Error parsing text-format tensorflow.serving.ModelServerConfig: 4:16: Message type '
            '"tensorflow.serving.ModelConfig" has no field named "bogus_field".') in proc.stderr
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{config}'" in proc.stdout
    missing = subprocess.run([str(server_bin), f"--model_config_file={tmp_path / 'none'}"], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2
    assert f"Failed to start server. Error: NOT_FOUND: {tmp_path / 'none'}; No such file or directory" in missing.stdout


def test_grpc_health_checking_service_behind_its_flag(model_server_factory) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = model_server_factory("--model_name=half", f"--model_base_path={HALF_PLUS_TWO}",
                                  "--enable_grpc_healthcheck_service")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "PredictionService", "ModelService", "tensorflow.serving.PredictionService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    plain = model_server_factory("--model_name=half", f"--model_base_path={HALF_PLUS_TWO}")
    with grpc.insecure_channel(plain.grpc_target) as channel, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
