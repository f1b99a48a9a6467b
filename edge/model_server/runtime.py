"""Loads one model version (a SavedModel, or a ``model.tflite`` with LiteRT) and runs it.

``Servable`` is what the manager hands to requests: it checks a request the way TF Serving's
``predict_util.cc`` / ``tensorflow/cc/saved_model/util.cc`` do (same codes, same words) and maps
TensorFlow runtime errors to their canonical codes. TensorFlow and LiteRT are imported lazily.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np

from edge.errors import SavedModelError
from edge.model_server.status import ServingError, code_from_int
from edge.model_server.tflite import TFLiteBackend
from edge.serving.savedmodel import DEFAULT_SIGNATURE, SavedModelRunner, SignatureInfo, TensorInfo

logger = logging.getLogger(__name__)

PREDICT_METHOD = "tensorflow/serving/predict"
class Backend(Protocol):
    kind: str
    signatures: dict[str, SignatureInfo]
    feed_names: dict[str, dict[str, str]]  # signature -> input alias -> graph tensor name

    def run(self, signature: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- SavedModel
def _saved_model_sigdefs(version_dir: Path) -> dict[str, Any]:
    """SignatureDefs of the "serve" MetaGraph, read from saved_model.pb (method names, feed names)."""
    from tensorflow.core.protobuf import saved_model_pb2  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return dict(mg.signature_def)
    return {}


class SavedModelBackend:
    kind = "tensorflow"

    def __init__(self, version_dir: Path, threads: int = 0) -> None:
        self._runner = SavedModelRunner(version_dir, threads)
        try:
            sigdefs = _saved_model_sigdefs(Path(version_dir))
        except Exception as exc:  # metadata only: the model itself loaded
            logger.warning("%s: cannot read signature metadata from saved_model.pb: %s", version_dir, exc)
            sigdefs = {}
        self.signatures: dict[str, SignatureInfo] = {}
        self.feed_names: dict[str, dict[str, str]] = {}
        for name, info in self._runner.signatures.items():
            sd = sigdefs.get(name)
            method = sd.method_name if sd is not None and sd.method_name else PREDICT_METHOD
            self.signatures[name] = dataclasses.replace(info, method_name=method)
            self.feed_names[name] = {
                alias: (sd.inputs[alias].name if sd is not None and alias in sd.inputs else alias)
                for alias in info.inputs
            }

    def run(self, signature: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self._runner.run(inputs, signature, outputs)

    def close(self) -> None:
        self._runner = None  # type: ignore[assignment]


class SessionBackend:
    """A TF1 SavedModel run through a v1 Session, feeding and fetching the SignatureDefs' tensor
    names as TF Serving does. Used when TF2's ``tf.saved_model.load`` cannot rebuild a TF1
    signature (e.g. testdata ``saved_model_half_plus_three``: "Shape must be rank 1 but is rank 0
    for ParseExample")."""

    kind = "tensorflow"

    def __init__(self, version_dir: Path, threads: int = 0) -> None:
        import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

        config = tf.compat.v1.ConfigProto()
        if threads > 0:
            config.intra_op_parallelism_threads = threads
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=config)
        try:
            with self._graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self._session, ["serve"], str(version_dir))
        except Exception as exc:
            self._session.close()
            raise SavedModelError(f"{version_dir}: TensorFlow could not load the SavedModel: {exc}") from exc
        self._sigdefs = dict(meta_graph.signature_def)
        self.signatures = {}
        self.feed_names = {}
        for name, sd in self._sigdefs.items():
            self.signatures[name] = SignatureInfo(
                name,
                {a: self._info(a, t) for a, t in sorted(sd.inputs.items())},
                {a: self._info(a, t) for a, t in sorted(sd.outputs.items())},
                sd.method_name or PREDICT_METHOD,
            )
            self.feed_names[name] = {a: t.name for a, t in sd.inputs.items()}

    @staticmethod
    def _info(alias: str, tensor: Any) -> TensorInfo:
        import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

        dtype = tf.dtypes.as_dtype(tensor.dtype)
        shape = None
        if tensor.HasField("tensor_shape") and not tensor.tensor_shape.unknown_rank:
            shape = tuple(d.size if d.size >= 0 else None for d in tensor.tensor_shape.dim)
        return TensorInfo(alias, "string" if dtype == tf.string else np.dtype(dtype.as_numpy_dtype).name, shape)

    def run(self, signature: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        sd = self._sigdefs[signature]
        graph = self._graph
        feeds = {}
        for alias, value in inputs.items():
            tensor = graph.get_tensor_by_name(sd.inputs[alias].name)
            dtype = tensor.dtype.as_numpy_dtype if tensor.dtype.name != "string" else object
            feeds[tensor.ref()] = np.asarray(value, dtype=dtype)
        fetches = [graph.get_tensor_by_name(sd.outputs[alias].name) for alias in outputs]
        # Session._do_run skips Session.run's Python-side check of fed shapes against the placeholders'
        # static shapes: like TF Serving's C++ Session::Run, only the graph's ops judge the shapes
        # (x=[2.0] on a [None, 1] placeholder works there).
        fetched = self._session._do_run(None, [], fetches, feeds, None, None)
        return dict(zip(outputs, fetched))

    def close(self) -> None:
        self._session.close()


def _is_tf1_saved_model(version_dir: Path) -> bool:
    try:
        from tensorflow.core.protobuf import (
            saved_model_pb2,  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model
        )

        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    except Exception:
        return False
    return not any(mg.HasField("object_graph_def") for mg in sm.meta_graphs)


def load_backend(version_dir: Path, *, prefer_tflite: bool = False, threads: int = 0) -> Backend:
    """Load a version folder: model.tflite with LiteRT when preferred and present, else the SavedModel."""
    version_dir = Path(version_dir)
    tflite = version_dir / "model.tflite"
    has_saved_model = (version_dir / "saved_model.pb").is_file()
    if tflite.is_file() and (prefer_tflite or not has_saved_model):
        return TFLiteBackend(tflite)
    try:
        return SavedModelBackend(version_dir, threads)
    except SavedModelError as exc:
        if not _is_tf1_saved_model(version_dir):
            raise
        logger.info("%s: TF2 loader failed on this TF1 SavedModel (%s); using a v1 Session", version_dir, exc)
        return SessionBackend(version_dir, threads)


# ----------------------------------------------------------------------------- request checks
def _join(keys: Iterable[str]) -> str:
    return ",".join(sorted(keys))


def check_request(
    sig: SignatureInfo, feed_names: dict[str, str], inputs: dict[str, Any], output_filter: Sequence[str] | None
) -> list[str]:
    """Validate like predict_util.cc PreProcessPrediction; return the output aliases to fetch."""
    sent, expected = set(inputs), set(sig.inputs)
    if len(sent) != len(expected):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} len({{{_join(sent)}}}) != "
            f"len({{{_join(expected)}}}). Sent extra: {{{_join(sent - expected)}}}. "
            f"Missing but required: {{{_join(expected - sent)}}}.",
        )
    for alias in sorted(expected):
        if alias not in sent:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Signature input alias: {alias}(feed name: {feed_names.get(alias, alias)}) not found in request "
                f"and no default value provided. Inputs expected to be in the request {{{_join(sent)}}}, "
                f"or default input alias set: ",
            )
    wanted: list[str] = []
    for alias in output_filter or ():
        if alias not in sig.outputs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                f"{{{_join(sig.outputs)}}}.",
            )
        if alias in wanted:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
        wanted.append(alias)
    return wanted or sorted(sig.outputs)


def runtime_error(exc: BaseException) -> ServingError:
    """Map an exception raised while running a model to a ServingError (TF's code and message)."""
    if isinstance(exc, ServingError):
        return exc
    code = getattr(exc, "error_code", None)  # tf.errors.OpError
    if isinstance(code, int):
        return ServingError(code_from_int(code), str(getattr(exc, "message", exc)))
    if isinstance(exc, (ValueError, TypeError, SavedModelError)):
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


class Servable:
    """One loaded version of a model; ``run`` is thread-safe."""

    def __init__(self, name: str, version: int, path: Path, backend: Backend) -> None:
        self.name = name
        self.version = version
        self.path = Path(path)
        self.runtime: str = backend.kind
        self.signatures: dict[str, SignatureInfo] = backend.signatures
        self._backend = backend
        self._calls = 0
        self._calls_lock = threading.Lock()
        self.batcher: Any = None  # a batching.BatchScheduler, set by the manager

    @property
    def runtime_calls(self) -> int:
        """How many times the underlying runtime was called (batched calls count once)."""
        return self._calls

    def signature(self, name: str | None) -> SignatureInfo:
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            ) from None

    def run(
        self,
        inputs: dict[str, np.ndarray],
        signature: str | None = None,
        output_filter: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        sig = self.signature(signature)
        wanted = check_request(sig, self._backend.feed_names.get(sig.name, {}), inputs, output_filter)
        if self.batcher is not None:
            batched: dict[str, np.ndarray] = self.batcher.submit(sig, inputs, wanted)
            return batched
        return self.call(sig.name, inputs, wanted)

    def call(self, signature: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run the runtime directly (no checks, no batching)."""
        with self._calls_lock:
            self._calls += 1
        try:
            return self._backend.run(signature, inputs, outputs)
        except Exception as exc:
            raise runtime_error(exc) from exc

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self._backend.close()


