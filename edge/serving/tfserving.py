"""The `tfserving` backend: classify through TF Serving (or edge-model-server) over gRPC.

No TensorFlow import: requests are built from the project's own copy of the TF Serving protos
(`edge.serving.protos`) and numpy. The model's input is learned from GetModelMetadata; pixels go
as packed uint8 (`tensor_content`) when the signature takes DT_UINT8, as JPEG bytes when it takes
DT_STRING, as float32 otherwise. The version is pinned to an explicit number (the configured
one, or the newest AVAILABLE at discovery) so every result names the version that produced it
and a later swap is an explicit, atomic change. While the server is unreachable the backend is
`degraded`: calls fail fast (deadline), the pipeline drops and counts those frames, and the
channel reconnects by itself.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np

from edge.errors import BackendUnavailable, CandidateLoadError, ClassifierError
from edge.models.metadata import PreprocessSpec, VersionMetadata, read_version_metadata
from edge.serving.base import ClassifierBase, ClassifierInfo, ImageInput, softmax
from edge.serving.protos import messages
from edge.serving.tensors import from_ndarray, to_ndarray

logger = logging.getLogger(__name__)

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
SIGNATURE = "serving_default"
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.RESOURCE_EXHAUSTED}



def _dims(shape_proto: Any) -> tuple[int | None, ...] | None:
    if shape_proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in shape_proto.dim)


class TFServingClassifier(ClassifierBase):
    """A Classifier whose model runs in a TF Serving-compatible server."""

    backend = "tfserving"

    def __init__(
        self,
        target: str,
        model_name: str,
        version: int | str = "latest",
        store: Path | None = None,
        preprocess_override: PreprocessSpec | None = None,
        timeout_s: float = 5.0,
        send: str = "auto",
        jpeg_quality: int = 90,
        retry_interval_s: float = 2.0,
    ) -> None:
        self.target = target
        self.model_name = model_name
        self._wanted_version = version
        self._store = store
        self._override = preprocess_override
        self._timeout_s = timeout_s
        self._send = send
        self._jpeg_quality = jpeg_quality
        self._retry_interval_s = retry_interval_s
        self._pb = messages()
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 5000),
            ("grpc.keepalive_time_ms", 30000),
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self._predict = self._channel.unary_unary(
            PREDICT, request_serializer=self._pb.PredictRequest.SerializeToString,
            response_deserializer=self._pb.PredictResponse.FromString)
        self._metadata = self._channel.unary_unary(
            GET_METADATA, request_serializer=self._pb.GetModelMetadataRequest.SerializeToString,
            response_deserializer=self._pb.GetModelMetadataResponse.FromString)
        self._status = self._channel.unary_unary(
            GET_STATUS, request_serializer=self._pb.GetModelStatusRequest.SerializeToString,
            response_deserializer=self._pb.GetModelStatusResponse.FromString)
        self._lock = threading.Lock()
        self._info: ClassifierInfo | None = None
        self._encoding = "uint8"
        self._next_attempt = 0.0
        self.state = "connecting"
        self.last_error: str | None = None
        self.calls = 0
        self.failures = 0
        try:
            self._discover()
        except BackendUnavailable as exc:
            logger.warning("TF Serving at %s not usable yet (%s); will keep trying", target, exc)

    # ------------------------------------------------------------------ discovery
    @property
    def info(self) -> ClassifierInfo:
        info = self._info
        if info is not None:
            return info
        with self._lock:
            if self._info is None:
                if time.monotonic() < self._next_attempt:
                    raise BackendUnavailable(self.last_error or "backend not discovered yet")
                self._discover()
            return self._info  # type: ignore[return-value]

    def _fail(self, message: str) -> BackendUnavailable:
        self.state = "degraded"
        self.last_error = message
        self._next_attempt = time.monotonic() + self._retry_interval_s
        return BackendUnavailable(message)

    def _resolve_version(self) -> int:
        if self._wanted_version != "latest":
            return int(self._wanted_version)
        request = self._pb.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        response = self._status(request, timeout=self._timeout_s)
        available = [s.version for s in response.model_version_status if s.state == 30]  # AVAILABLE
        if not available:
            raise self._fail(f"model {self.model_name!r} has no AVAILABLE version on {self.target}")
        return int(max(available))

    def _discover(self) -> None:
        try:
            version = self._resolve_version()
            request = self._pb.GetModelMetadataRequest()
            request.model_spec.name = self.model_name
            request.model_spec.version.value = version
            request.metadata_field.append("signature_def")
            response = self._metadata(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise self._fail(f"{self.target}: {exc.code().name}: {exc.details()}") from None
        sigmap = self._pb.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(sigmap):
            raise self._fail(f"{self.target}: GetModelMetadata returned no signature_def")
        if SIGNATURE not in sigmap.signature_def:
            raise ClassifierError(f"model {self.model_name} v{version} has no {SIGNATURE!r} signature")
        signature = sigmap.signature_def[SIGNATURE]
        metadata = self._version_metadata(version)
        image_input, encoding = self._image_input(signature, metadata)
        output = self._output_name(signature, metadata)
        if encoding == "jpeg":  # cv2.imencode takes BGR; JPEG carries colour correctly by itself
            metadata = replace(metadata, preprocess=replace(metadata.preprocess, color="BGR"))
        self._encoding = encoding
        self._info = ClassifierInfo(self.model_name, version, image_input, output, metadata, "tfserving")
        self.state = "ok"
        self.last_error = None
        logger.info("TF Serving %s: model %s version %d, input %s (%s, sent as %s), output %s",
                    self.target, self.model_name, version, image_input.name,
                    image_input.dtype, encoding, output)

    def _version_metadata(self, version: int) -> VersionMetadata:
        """labels.txt / edge.json from the shared model store when this device can read it."""
        if self._store is not None:
            for candidate in (self._store / self.model_name / str(version),
                              self._store / self.model_name / f"{version:08d}"):
                if candidate.is_dir():
                    return read_version_metadata(candidate, self._override)
        logger.warning("no local copy of %s v%d for labels/edge.json; results carry class indices",
                       self.model_name, version)
        return VersionMetadata(self._override or PreprocessSpec(), None, "none", ())

    def _image_input(self, signature: Any, metadata: VersionMetadata) -> tuple[ImageInput, str]:
        if len(signature.inputs) != 1:
            raise ClassifierError(f"{SIGNATURE} must take one image input, takes {sorted(signature.inputs)}")
        name, tensor = next(iter(signature.inputs.items()))
        dtype = self._pb.DataType.Name(tensor.dtype)
        dims = _dims(tensor.tensor_shape)
        if dtype == "DT_STRING":
            size = metadata.preprocess.size or (224, 224)
            return ImageInput(name, "uint8", size[1], size[0], 3), "jpeg"
        if dims is None or len(dims) != 4 or dims[1] is None or dims[2] is None:
            raise ClassifierError(f"input {name!r} must be [batch, height, width, channels] with a fixed size, is {dims}")
        numpy_dtype = {"DT_UINT8": "uint8", "DT_FLOAT": "float32", "DT_HALF": "float16"}.get(dtype)
        if numpy_dtype is None:
            raise ClassifierError(f"input {name!r} has dtype {dtype}; expected DT_UINT8, DT_FLOAT or DT_STRING")
        if self._send == "float32":
            numpy_dtype = "float32"
        return ImageInput(name, numpy_dtype, int(dims[1]), int(dims[2]), int(dims[3] or 3)), numpy_dtype

    @staticmethod
    def _output_name(signature: Any, metadata: VersionMetadata) -> str:
        if metadata.output_name:
            if metadata.output_name not in signature.outputs:
                raise ClassifierError(f"edge.json names output {metadata.output_name!r}; signature has {sorted(signature.outputs)}")
            return metadata.output_name
        if len(signature.outputs) == 1:
            return str(next(iter(signature.outputs)))
        rank2 = [k for k, v in signature.outputs.items() if len(v.tensor_shape.dim) == 2]
        if len(rank2) == 1:
            return str(rank2[0])
        raise ClassifierError(f"cannot tell which output holds scores among {sorted(signature.outputs)}; name it in edge.json")

    # ------------------------------------------------------------------ inference
    def _request(self, info: ClassifierInfo, batch: np.ndarray) -> Any:
        request = self._pb.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.version.value = info.version
        request.model_spec.signature_name = SIGNATURE
        request.output_filter.append(info.output_name)
        tensor = request.inputs[info.image_input.name]
        if self._encoding == "jpeg":
            params = [cv2.IMWRITE_JPEG_QUALITY, self._jpeg_quality]
            encoded = [cv2.imencode(".jpg", image, params)[1].tobytes() for image in batch]
            tensor.CopyFrom(from_ndarray(np.array(encoded, dtype=object)))
        else:
            tensor.CopyFrom(from_ndarray(np.ascontiguousarray(batch)))
        return request

    def classify(self, batch: np.ndarray) -> np.ndarray:
        info = self.info
        request = self._request(info, batch)
        self.calls += 1
        try:
            response = self._predict(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            self.failures += 1
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:  # the pinned version went away: learn the model again
                self._info = None
                raise self._fail(f"{code.name}: {exc.details()}") from None
            if code in _RETRYABLE:
                raise self._fail(f"{self.target}: {code.name}: {exc.details()}") from None
            raise ClassifierError(f"TF Serving refused the request: {code.name}: {exc.details()}") from None
        self.state = "ok"
        self.last_error = None
        scores = to_ndarray(response.outputs[info.output_name]).astype(np.float32, copy=False)
        scores = scores.reshape(scores.shape[0], -1)
        return softmax(scores) if info.metadata.activation == "softmax" else scores

    def health(self) -> dict[str, Any]:
        info = self._info
        return {"backend": "tfserving", "target": self.target, "state": self.state, "last_error": self.last_error,
                "pinned_version": info.version if info else None, "sent_as": self._encoding,
                "calls": self.calls, "failures": self.failures}

    def close(self) -> None:
        self._channel.close()


AVAILABLE = 30  # tensorflow.serving.ModelVersionStatus.State.AVAILABLE


def wait_tfserving_available(target: str, model: str, version: int, timeout_s: float = 120.0) -> None:
    """Block until GetModelStatus reports `version` AVAILABLE; CandidateLoadError on timeout or END."""
    pb = messages()
    channel = grpc.insecure_channel(target)
    status = channel.unary_unary(GET_STATUS, request_serializer=pb.GetModelStatusRequest.SerializeToString,
                                 response_deserializer=pb.GetModelStatusResponse.FromString)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    try:
        while time.monotonic() < deadline:
            request = pb.GetModelStatusRequest()
            request.model_spec.name = model
            request.model_spec.version.value = version
            try:
                response = status(request, timeout=5.0)
                states = {s.version: s for s in response.model_version_status}
                entry = states.get(version)
                if entry is not None and entry.state == AVAILABLE:
                    return
                if entry is not None and entry.state == 40 and entry.status.error_code:  # END with an error
                    raise CandidateLoadError(f"{target} failed to load {model} v{version}: {entry.status.error_message}")
                last = f"state {entry.state if entry is not None else 'unknown'}"
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            time.sleep(0.5)
    finally:
        channel.close()
    raise CandidateLoadError(
        f"{target} did not make {model} v{version} AVAILABLE within {timeout_s:.0f}s ({last}); is the server "
        "watching this store with a policy that keeps >= 2 versions (latest {{ num_versions: 2 }})?")
