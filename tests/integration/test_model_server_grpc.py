"""edge-model-server's gRPC API, driven with the official tensorflow_serving.apis client.

Known answers from TF Serving's own test models (../shared/testdata/tfserving): half_plus_two
y = 0.5x + 2, half_plus_three y = 0.5x + 3; codes and wording as TF Serving returns them.
"""
from __future__ import annotations

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from tests.support.models import IMAGE_CLASSES, IMAGE_SIZE  # noqa: E402
from tests.support.paths import TFSERVING_TESTDATA  # noqa: E402

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def channel(tfserving_server):
    ch = grpc.insecure_channel(tfserving_server.grpc_target, options=[
        ("grpc.max_send_message_length", 512 << 20), ("grpc.max_receive_message_length", 512 << 20)])
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(model: str, x, signature: str = "", **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, dtype=np.float32)))
    return request


def example(x: float) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={"x": tf.train.Feature(
        float_list=tf.train.FloatList(value=[x]))}))


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=TIMEOUT)
    return info.value


# ------------------------------------------------------------------ Predict
def test_predict_half_plus_two_known_answer(stub):
    response = stub.Predict(predict_request("default", [[2.0]]), TIMEOUT)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[3.0]]
    assert response.model_spec.name == "default"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_predict_half_plus_three_known_answer(stub):
    response = stub.Predict(predict_request("half_plus_three", [[2.0]]), TIMEOUT)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[4.0]]


def test_predict_typed_float_val_and_no_shape_check(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    tensor = request.inputs["x"]
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add().size = 3  # rank 1 although the signature says [-1, 1]
    tensor.float_val.extend([2.0, 4.0, 6.0])
    response = stub.Predict(request, TIMEOUT)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0, 4.0, 5.0]


def test_predict_output_filter(stub):
    request = predict_request("default", [1.0])
    request.output_filter.append("y")
    assert tf.make_ndarray(stub.Predict(request, TIMEOUT).outputs["y"]).tolist() == [2.5]
    request.output_filter[:] = ["nope"]
    err = rpc_error(stub.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in err.details()


def test_predict_version_and_label(stub):
    response = stub.Predict(predict_request("saved_model_half_plus_two_2_versions", [2.0], version=123), TIMEOUT)
    assert response.model_spec.version.value == 123
    response = stub.Predict(predict_request("saved_model_half_plus_two_2_versions", [2.0], label="canary"), TIMEOUT)
    assert response.model_spec.version.value == 124
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0]
    latest = stub.Predict(predict_request("saved_model_half_plus_two_2_versions", [2.0]), TIMEOUT)
    assert latest.model_spec.version.value == 124


def test_predict_string_input_passes_through(stub):
    """DT_STRING tensors (serialized Examples here, JPEG bytes for image models) reach the model as bytes."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    serialized = [example(2.0).SerializeToString(), example(6.0).SerializeToString()]
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
    response = stub.Predict(request, TIMEOUT)
    assert tf.make_ndarray(response.outputs["scores"]).tolist() == [[3.0], [5.0]]
    assert response.model_spec.signature_name == "classify_x_to_y"


@pytest.mark.parametrize("spec, code, words", [
    ({"model": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable"),
    ({"model": "default", "version": 7}, grpc.StatusCode.NOT_FOUND, "Servable"),
    ({"model": "saved_model_half_plus_two_2_versions", "label": "nope"}, grpc.StatusCode.INVALID_ARGUMENT,
     "version label"),
    ({"model": "default", "signature": "nope"}, grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
])
def test_predict_model_spec_errors(stub, spec, code, words):
    kwargs = {k: v for k, v in spec.items() if k in ("version", "label")}
    request = predict_request(spec["model"], [1.0], spec.get("signature", ""), **kwargs)
    err = rpc_error(stub.Predict, request)
    assert err.code() == code
    assert words in err.details()


def test_predict_bad_input_alias(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["nope"].CopyFrom(tf.make_tensor_proto(np.float32([1.0])))
    err = rpc_error(stub.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "input tensor alias not found in signature: nope. Inputs expected to be in the set {x}."


def test_predict_bad_tensor_content_length(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    tensor = request.inputs["x"]
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add().size = 4
    tensor.tensor_content = np.float32([1, 2, 3]).tobytes()  # 12 bytes for 4 floats
    err = rpc_error(stub.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor parsing error: x" in err.details()


def test_predict_wrong_dtype_and_empty_request(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float64([1.0])))
    err = rpc_error(stub.Predict, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be float but double is provided" in err.details()
    err = rpc_error(stub.Predict, predict_pb2.PredictRequest())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Missing ModelSpec"


# ------------------------------------------------------------------ Classify / Regress / MultiInference
def test_classify_and_regress(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.extend([example(2.0), example(4.0)])
    response = stub.Classify(request, TIMEOUT)
    assert [[c.score for c in cl.classes] for cl in response.result.classifications] == [[3.0], [4.0]]
    assert response.model_spec.version.value == 123

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    ctx = request.input.example_list_with_context
    ctx.context.CopyFrom(example(8.0))  # features of the examples win over the context's
    ctx.examples.extend([example(2.0), example(6.0)])
    response = stub.Regress(request, TIMEOUT)
    assert [r.value for r in response.result.regressions] == [3.0, 5.0]
    assert response.model_spec.signature_name == "regress_x_to_y"


def test_classify_errors(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    err = rpc_error(stub.Classify, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == "Input is empty."
    request.input.example_list.examples.append(example(1.0))
    request.model_spec.signature_name = "nope"
    err = rpc_error(stub.Classify, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "No signature was found with the name: nope" in err.details()
    request.model_spec.signature_name = ""  # serving_default is a predict signature without an `inputs` key
    err = rpc_error(stub.Classify, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # method_name is only checked with the flag (TF2)
    assert err.details().startswith("No classification inputs found in SignatureDef: inputs {")


def test_multi_inference(stub):
    request = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                        ("regress_x_to_y", "tensorflow/serving/regress")):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = sig
        task.method_name = method
    request.input.example_list.examples.extend([example(2.0)])
    response = stub.MultiInference(request, TIMEOUT)
    assert response.results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert response.results[1].regression_result.regressions[0].value == 3.0
    assert response.results[1].model_spec.signature_name == "regress_x_to_y"


# ------------------------------------------------------------------ metadata / status
def test_get_model_metadata(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, TIMEOUT)
    assert response.model_spec.name == "default" and response.model_spec.version.value == 123
    any_msg = response.metadata["signature_def"]
    assert any_msg.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    sdm = get_model_metadata_pb2.SignatureDefMap()
    assert any_msg.Unpack(sdm)
    assert set(sdm.signature_def) == {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2",
                                      "regress_x2_to_y3"}
    sig = sdm.signature_def["serving_default"]
    assert sig.inputs["x"].name == "x:0" and sig.outputs["y"].dtype == tf.float32.as_datatype_enum
    assert sdm.signature_def["classify_x_to_y"].method_name == "tensorflow/serving/classify"

    request.metadata_field[:] = ["nope"]
    err = rpc_error(stub.GetModelMetadata, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in err.details()


def test_get_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    response = model_stub.GetModelStatus(request, TIMEOUT)
    assert len(response.model_version_status) == 1
    status = response.model_version_status[0]
    assert status.version == 123
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""
    request.model_spec.name = "saved_model_half_plus_two_2_versions"
    versions = {s.version for s in model_stub.GetModelStatus(request, TIMEOUT).model_version_status}
    assert versions == {123, 124}
    request.model_spec.name = "nope"
    err = rpc_error(model_stub.GetModelStatus, request)
    assert err.code() == grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------------ image classifier, big messages, socket
def test_image_classification_tutorial_client(tfserving_server, image_model_base):
    """Exactly what TF Serving's image classification tutorial client does."""
    image = np.load(image_model_base / "probe.npy")[:1]
    channel = grpc.insecure_channel(tfserving_server.grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "image_classifier"
    request.model_spec.signature_name = "serving_default"
    request.inputs["input"].CopyFrom(tf.make_tensor_proto(image, shape=[1, IMAGE_SIZE, IMAGE_SIZE, 3]))
    result = stub.Predict(request, 10.0)
    probabilities = tf.make_ndarray(result.outputs["output"])
    assert probabilities.shape == (1, IMAGE_CLASSES)
    np.testing.assert_allclose(probabilities, np.load(image_model_base / "expected.npy")[:1], rtol=1e-4, atol=1e-6)
    channel.close()


def test_image_model_signature_keys(image_model_base):
    loaded = tf.saved_model.load(str(image_model_base / "1"))
    fn = loaded.signatures["serving_default"]
    assert list(fn.structured_input_signature[1]) == ["input"]
    assert list(fn.structured_outputs) == ["output"]


def test_predict_batch_larger_than_grpc_default_limit(stub):
    batch = np.random.default_rng(0).random((32, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)  # ~19 MB
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "image_classifier"
    request.inputs["input"].CopyFrom(tf.make_tensor_proto(batch))
    assert request.ByteSize() > 4 * 1024 * 1024
    response = stub.Predict(request, 60.0)
    assert tf.make_ndarray(response.outputs["output"]).shape == (32, IMAGE_CLASSES)


def test_unix_socket(tfserving_server):
    with grpc.insecure_channel(f"unix:{tfserving_server.socket_path}") as ch:
        response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(predict_request("default", [2.0]), TIMEOUT)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0]


def test_server_keeps_serving_after_bad_requests(stub, tfserving_server):
    assert tfserving_server.alive()
    assert tf.make_ndarray(stub.Predict(predict_request("default", [0.0]), TIMEOUT).outputs["y"]).tolist() == [2.0]


# ------------------------------------------------------------------ HandleReloadConfigRequest
def test_reload_config_adds_and_removes_models(model_server_factory):
    server = model_server_factory("--model_name=default",
                                  f"--model_base_path={TFSERVING_TESTDATA / 'saved_model_half_plus_two_cpu'}")
    with grpc.insecure_channel(server.grpc_target) as ch:
        models = model_service_pb2_grpc.ModelServiceStub(ch)
        predict = prediction_service_pb2_grpc.PredictionServiceStub(ch)

        def reload(*entries):
            config = model_server_config_pb2.ModelServerConfig()
            for name, folder in entries:
                c = config.model_config_list.config.add()
                c.name, c.base_path, c.model_platform = name, str(TFSERVING_TESTDATA / folder), "tensorflow"
            request = model_management_pb2.ReloadConfigRequest(config=config)
            return models.HandleReloadConfigRequest(request, 120.0)

        response = reload(("default", "saved_model_half_plus_two_cpu"), ("three", "saved_model_half_plus_three"))
        assert response.status.error_code == 0
        assert tf.make_ndarray(predict.Predict(predict_request("three", [[2.0]]), TIMEOUT).outputs["y"]).tolist() == [[4.0]]

        reload(("three", "saved_model_half_plus_three"))
        err = rpc_error(predict.Predict, predict_request("default", [2.0]))
        assert err.code() == grpc.StatusCode.NOT_FOUND and "Servable" in err.details()

        with pytest.raises(grpc.RpcError) as info:
            models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
