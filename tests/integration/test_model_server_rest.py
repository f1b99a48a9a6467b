"""edge-model-server's REST API: TF Serving's routes, JSON shapes, errors and HTTP codes."""
from __future__ import annotations

import base64
import http.client
import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.support.paths import TFSERVING_TESTDATA


def call(server, method: str, path: str, body: bytes | str | dict | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(server.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        status, raw, ctype = err.code, err.read(), err.headers.get("Content-Type", "")
    return status, json.loads(raw) if "json" in ctype else raw.decode()


@pytest.fixture(scope="module")
def server(tfserving_server):
    return tfserving_server


def test_model_status(server):
    expected = {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    assert call(server, "GET", "/v1/models/default") == (200, expected)
    assert call(server, "GET", "/v1/models/default/versions/123") == (200, expected)
    status, doc = call(server, "GET", "/v1/models/saved_model_half_plus_two_2_versions/labels/stable")
    assert status == 200 and {v["version"] for v in doc["model_version_status"]} == {"123", "124"}


@pytest.mark.parametrize("model, path, testdata", [
    ("default", "/v1/models/default/metadata", "half_plus_two_model_metadata.json"),
    ("saved_model_half_plus_two_2_versions", "/v1/models/saved_model_half_plus_two_2_versions/versions/123/metadata",
     "saved_model_half_plus_two_2_versions_metadata.json"),
])
def test_metadata_equals_tf_serving_json(server, model, path, testdata):
    status, doc = call(server, "GET", path)
    assert status == 200
    assert doc == json.loads((TFSERVING_TESTDATA / testdata).read_text())


def test_metadata_tf2_model(server):
    status, doc = call(server, "GET", "/v1/models/half_plus_two_tf2/metadata")
    expected = json.loads((TFSERVING_TESTDATA / "saved_model_half_plus_two_tf2_2_versions_metadata.json").read_text())
    expected["model_spec"]["name"] = "half_plus_two_tf2"
    # The stored JSON comes from a sibling export without signature defaults (the tf2_cpu model has
    # x=0.0 as a default); everything else must be identical.
    for d in (doc, expected):
        for sig in d["metadata"]["signature_def"]["signature_def"].values():
            sig.pop("defaults", None)
    assert status == 200 and doc == expected


def test_predict_known_answers(server):
    assert call(server, "POST", "/v1/models/default:predict", {"instances": [2, 3, 4]}) == \
        (200, {"predictions": [3.0, 3.5, 4.0]})
    assert call(server, "POST", "/v1/models/default/versions/123:predict", {"inputs": {"x": [[2.0], [4.0]]}}) == \
        (200, {"outputs": [[3.0], [4.0]]})
    assert call(server, "POST", "/v1/models/half_plus_three:predict", {"instances": [[2.0]]}) == \
        (200, {"predictions": [[4.0]]})
    status, doc = call(server, "POST", "/v1/models/saved_model_half_plus_two_2_versions/labels/canary:predict",
                       {"instances": [[1.0]]})
    assert (status, doc) == (200, {"predictions": [[2.5]]})


def test_predict_exact_text(server):
    request = urllib.request.Request(server.rest_url + "/v1/models/default:predict",
                                     data=b'{"instances": [2, 3, 4]}', method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert json.loads(resp.read()) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_b64_strings_and_signature_name(server):
    import tensorflow as tf

    ex = tf.train.Example(features=tf.train.Features(feature={"x": tf.train.Feature(
        float_list=tf.train.FloatList(value=[2.0]))})).SerializeToString()
    body = {"signature_name": "classify_x_to_y", "instances": [{"b64": base64.b64encode(ex).decode()}]}
    assert call(server, "POST", "/v1/models/default:predict", body) == (200, {"predictions": [[3.0]]})


def test_classify_and_regress(server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]}
    assert call(server, "POST", "/v1/models/default:classify", body) == (200, {"results": [[["", 3.0]], [["", 4.0]]]})
    body = {"signature_name": "regress_x_to_y", "context": {"x": 9.0}, "examples": [{"x": 2.0}, {"x": 6.0}]}
    assert call(server, "POST", "/v1/models/default:regress", body) == (200, {"results": [3.0, 5.0]})


@pytest.mark.parametrize("method, path, body, code, words", [
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("POST", "/v1/models/nope:predict", {"instances": [1.0]}, 404, "Servable"),
    ("POST", "/v1/models/default/versions/9:predict", {"instances": [1.0]}, 404, "Servable"),
    ("GET", "/v1/models/default/versions/9", None, 404, "Could not find version 9 of model default"),
    ("POST", "/v1/models/saved_model_half_plus_two_2_versions/labels/nope:predict", {"instances": [[1.0]]}, 400,
     "version label"),
    ("POST", "/v1/models/default:predict", '{"instances": [2, 3', 400, "JSON Parse error"),
    ("POST", "/v1/models/default:predict", "", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/default:predict", "[1]", 400, "Is not object"),
    ("POST", "/v1/models/default:predict", {"instances": [{"b64": "%%%"}]}, 400, "is not of expected type: float"),
    ("POST", "/v1/models/default:predict", {"signature_name": "classify_x_to_y", "instances": [{"b64": "%%%"}]},
     400, "Unable to base64 decode"),
    ("POST", "/v1/models/default:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", "/v1/models/default:predict", {"instances": [{"nope": 1.0}]}, 400, "does not have named input: nope"),
    ("POST", "/v1/models/default:predict", {"instances": [[1.0], [1.0, 2.0]]}, 400, "Failed to process element: 1"),
    ("POST", "/v1/models/default:predict", {"instances": ["a"]}, 400, "is not of expected type: float"),
    ("POST", "/v1/models/default:predict", {"x": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/default:classify", {"examples": [{"x": 1.0}]}, 400,
     "No classification inputs found in SignatureDef"),
    ("POST", "/v1/models/default:regress", {"signature_name": "regress_x_to_y"}, 400, "key 'examples' is expected"),
    ("GET", "/v1/models/default:predict", None, 400, "Malformed request"),
    ("PUT", "/v1/models/default", None, 400, "Malformed request"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/elsewhere", None, 404, ""),
])
def test_errors(server, method, path, body, code, words):
    status, doc = call(server, method, path, body)
    assert status == code, doc
    assert isinstance(doc, dict) and set(doc) == {"error"}
    assert words in doc["error"]


def test_oversized_body_is_refused_without_reading_it(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.putrequest("POST", "/v1/models/default:predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(10**12))
    conn.endheaders()
    conn.send(b'{"instances": [')
    resp = conn.getresponse()
    assert resp.status == 413
    assert "exceeds the limit" in json.loads(resp.read())["error"]
    conn.close()


def test_slow_or_silent_client_does_not_block_others(server):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as silent:
        silent.sendall(b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert call(server, "POST", "/v1/models/default:predict", {"instances": [2]}) == (200, {"predictions": [3.0]})


def test_chunked_request_body(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("POST", "/v1/models/default:predict", body=iter([b'{"instances": ', b"[2, 4]}"]),
                 encode_chunked=True)
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())) == (200, {"predictions": [3.0, 4.0]})
    conn.close()


def test_prometheus_metrics_count_requests(server):
    call(server, "POST", "/v1/models/default:predict", {"instances": [1.0]})
    call(server, "POST", "/v1/models/nope:predict", {"instances": [1.0]})
    status, text = call(server, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="default",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="default",API="Predict",entrypoint="REST"' in text
    assert "_total" not in text


def test_server_keeps_serving(server):
    assert server.alive()
    assert call(server, "POST", "/v1/models/default:predict", {"instances": [0]}) == (200, {"predictions": [2.0]})
