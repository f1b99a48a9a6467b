"""TF Lite models for ``--prefer_tflite_model``: LiteRT (XNNPACK) runs ``model.tflite``, with the
SignatureDefs TF Serving's converter stores in the model's metadata when there are any."""
from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from edge.errors import SavedModelError
from edge.model_server.status import ServingError
from edge.serving.litert import interpreter_class
from edge.serving.protos import messages
from edge.serving.savedmodel import DEFAULT_SIGNATURE, SignatureInfo, TensorInfo

logger = logging.getLogger(__name__)

PREDICT_METHOD = "tensorflow/serving/predict"


# ----------------------------------------------------------------------------- TFLite
def _tflite_sigdefs(model_bytes: bytes) -> dict[str, bytes]:
    """The ``signature_defs_metadata`` TF Serving's converter stores (serialized SignatureDefs)."""
    schema = None
    for module in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
        try:
            schema = importlib.import_module(module)
            break
        except ImportError:
            continue
    if schema is None:
        return {}
    from flatbuffers import flexbuffers  # comes with the LiteRT/TensorFlow runtime, only for .tflite models

    model = schema.Model.GetRootAsModel(model_bytes, 0)
    for i in range(model.MetadataLength()):
        meta = model.Metadata(i)
        if meta.Name() == b"signature_defs_metadata":
            data = model.Buffers(meta.Buffer()).DataAsNumpy().tobytes()
            root = flexbuffers.GetRoot(data).AsMap
            return {k.AsKey: bytes(v.AsStringBytes) for k, v in zip(root.Keys, root.Values)}
    return {}


def _signature_def_message() -> Any:
    try:
        return messages().SignatureDef
    except (ImportError, AttributeError):
        from tensorflow.core.protobuf import meta_graph_pb2  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

        return meta_graph_pb2.SignatureDef


class TFLiteBackend:
    """Mirrors TF Serving's tflite_session.cc: one ``serving_default`` signature whose keys are the
    TFLite tensor names, or the aliases of the SignatureDef stored in the model's metadata."""

    kind = "tflite"

    def __init__(self, model_path: Path) -> None:
        data = Path(model_path).read_bytes()
        try:
            self._interp = interpreter_class()(model_content=data)
            self._interp.allocate_tensors()
        except Exception as exc:
            raise SavedModelError(f"{model_path}: cannot build a TFLite interpreter: {exc}") from exc
        raw = _tflite_sigdefs(data)
        if len(raw) > 1:
            raise SavedModelError(f"{model_path}: Multiple SignatureDefs found in TfLite model")
        method, alias_of = PREDICT_METHOD, {}
        if raw:
            sd = _signature_def_message()()
            sd.ParseFromString(next(iter(raw.values())))
            method = sd.method_name or PREDICT_METHOD
            for alias, tensor in list(sd.inputs.items()) + list(sd.outputs.items()):
                alias_of[tensor.name.split(":", 1)[0]] = alias
        self._lock = threading.Lock()
        self._shapes: dict[int, tuple[int, ...]] = {}
        self._in: dict[str, dict[str, Any]] = {}
        self._out: dict[str, dict[str, Any]] = {}
        for detail, table in [(d, self._in) for d in self._interp.get_input_details()] + [
            (d, self._out) for d in self._interp.get_output_details()
        ]:
            name = detail["name"]
            if raw and name not in alias_of:
                raise SavedModelError(f"{model_path}: Cannot find signature def name from tflite tensor {name}")
            table[alias_of.get(name, name)] = detail

        def info(alias: str, d: dict[str, Any]) -> TensorInfo:
            return TensorInfo(alias, np.dtype(d["dtype"]).name if d["dtype"] is not np.object_ else "string",
                              tuple(int(x) for x in d["shape"]))

        sig = SignatureInfo(
            DEFAULT_SIGNATURE,
            {a: info(a, d) for a, d in sorted(self._in.items())},
            {a: info(a, d) for a, d in sorted(self._out.items())},
            method,
        )
        self.signatures = {DEFAULT_SIGNATURE: sig}
        self.feed_names = {DEFAULT_SIGNATURE: {a: d["name"] + ":0" for a, d in self._in.items()}}

    def run(self, signature: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        with self._lock:  # one interpreter: calls are serialized, like TfLiteSession::Run
            for alias, value in inputs.items():
                d = self._in[alias]
                value = np.asarray(value, dtype=d["dtype"])
                if tuple(value.shape) != self._shapes.get(d["index"], tuple(d["shape"])):
                    self._interp.resize_tensor_input(d["index"], list(value.shape))
                    self._interp.allocate_tensors()
                    self._shapes[d["index"]] = tuple(value.shape)
                self._interp.set_tensor(d["index"], value)
            try:
                self._interp.invoke()
            except Exception as exc:
                raise ServingError(grpc.StatusCode.INTERNAL, f"Failed to run interpreter. {exc}") from exc
            return {alias: np.array(self._interp.get_tensor(self._out[alias]["index"])) for alias in outputs}

    def close(self) -> None:
        self._interp = None
