"""Load a TensorFlow SavedModel version folder and run its signatures.

Shared by the gateway's embedded backend and by ``edge-model-server`` (the TF Serving-compatible
server): both need the signatures' input/output names, dtypes and shapes, and a call that takes
numpy arrays keyed by signature input name and returns numpy arrays keyed by output name.
TensorFlow is imported here, lazily, and nowhere else in the gateway's import path.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import SavedModelError

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
_threads_configured = threading.Lock()
_threads_done = False



@dataclass(frozen=True)
class TensorInfo:
    name: str  # key in the signature
    dtype: str  # numpy dtype name, or "string" for tf.string
    shape: tuple[int | None, ...] | None  # None = unknown rank


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = "tensorflow/serving/predict"


def configure_threads(threads: int) -> None:
    """Set TF's thread pools once per process, before the first model loads (0 = TF default)."""
    global _threads_done
    with _threads_configured:
        if _threads_done or threads <= 0:
            _threads_done = True
            return
        import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError as exc:  # TF already initialised by an earlier load
            logger.warning("cannot change TensorFlow thread pools now: %s", exc)
        _threads_done = True


def _tensor_info(name: str, spec: Any) -> TensorInfo:
    import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

    # np.dtype(...) of the type, not of an instance: bfloat16's constructor needs a value
    dtype = "string" if spec.dtype == tf.string else np.dtype(spec.dtype.as_numpy_dtype).name
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorInfo(name=name, dtype=dtype, shape=shape)


class SavedModelRunner:
    """One loaded SavedModel version; thread-safe calls into its signatures."""

    def __init__(self, version_dir: Path, threads: int = 0) -> None:
        self.path = Path(version_dir)
        if not (self.path / "saved_model.pb").is_file():
            raise SavedModelError(f"{self.path}: no saved_model.pb (not a SavedModel version folder)")
        configure_threads(threads)
        import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

        try:
            self._model = tf.saved_model.load(str(self.path), tags=["serve"])
        except Exception as exc:  # TF raises many types for corrupt or incompatible models
            raise SavedModelError(f"{self.path}: TensorFlow could not load the SavedModel: {exc}") from exc
        self._functions: dict[str, Any] = dict(self._model.signatures)
        self.signatures: dict[str, SignatureInfo] = {}
        for sig_name, fn in self._functions.items():
            _, kwargs = fn.structured_input_signature
            inputs = {k: _tensor_info(k, v) for k, v in sorted(kwargs.items())}
            outputs = {k: _tensor_info(k, v) for k, v in sorted(fn.structured_outputs.items())}
            self.signatures[sig_name] = SignatureInfo(sig_name, inputs, outputs)
        logger.info("loaded SavedModel %s (signatures: %s)", self.path, sorted(self.signatures))

    def signature(self, name: str | None = None) -> SignatureInfo:
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise SavedModelError(f"Serving signature name: \"{key}\" not found in signature def") from None

    def run(
        self,
        inputs: dict[str, np.ndarray],
        signature: str | None = None,
        output_filter: Iterable[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Call a signature with numpy inputs keyed by signature input name."""
        import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

        info = self.signature(signature)
        for key in inputs:
            if key not in info.inputs:
                raise SavedModelError(
                    f"input tensor alias not found in signature: {key}. "
                    f"Inputs expected to be in the set {{{','.join(info.inputs)}}}."
                )
        missing = [k for k in info.inputs if k not in inputs]
        if missing:
            raise SavedModelError(f"signature {info.name!r} is missing input(s) {missing}")
        wanted = list(output_filter) if output_filter else list(info.outputs)
        for key in wanted:
            if key not in info.outputs:
                raise SavedModelError(f"output tensor alias not found in signature: {key}")
        fn = self._functions[info.name]
        tensors = {}
        for key, value in inputs.items():
            dtype = tf.string if info.inputs[key].dtype == "string" else tf.as_dtype(info.inputs[key].dtype)
            tensors[key] = tf.convert_to_tensor(value, dtype=dtype)
        result = fn(**tensors)
        return {key: result[key].numpy() for key in wanted}
