"""LiteRT (TensorFlow Lite) runtime for the embedded backend: a ``.tflite`` model run in-process.

``ai_edge_litert`` is the only import: TensorFlow is never loaded on this path, which is what makes
a cached LiteRT selection cheap on small boxes (``import tensorflow`` alone costs ~550 MB RSS).
The interpreter uses XNNPACK (ai_edge_litert applies it by default to float models) with
``num_threads`` = the configured threads or the cores this process may run on.

Batches are run one image at a time on the model's batch-1 input tensor: with XNNPACK and N threads
that is as fast as resizing the input to the batch size (bench/runtimes.py measures both), and it
never reallocates tensors when the batcher hands over batches of varying size. Each image costs one
copy into the input tensor and one copy of its scores out; nothing else is allocated per frame.

Serving uses a pool of interpreters (``serving.interpreters``; auto: one per core, at most 4),
each with ``cores // interpreters`` threads, and the pipeline runs one inference thread per
interpreter on different frames. On a small box that is faster than one interpreter spread over
all cores, and much faster once capture threads take CPU too: an XNNPACK op split over 2 threads
waits for the slower one, so one busy core stalls every op, while separate interpreters just
share the cores (MobileNetV2 here: 272 vs 250 img/s idle, 216 vs 177 fps beside four 720p decoders).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import LiteRTError
from edge.serving.base import ClassifierBase, ClassifierInfo, ImageInput, softmax

logger = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"



def interpreter_class() -> Any:
    """ai_edge_litert's Interpreter (TF's copy only when ai_edge_litert is not installed)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # optional runtime (extra `litert`)

        return Interpreter
    except ImportError:  # pragma: no cover - ai_edge_litert is a dependency of the litert runtime
        import tensorflow as tf  # heavy (~550 MB, 2.5 s): only when TensorFlow runs a model

        return tf.lite.Interpreter


def _tensor_name(name: str) -> str:
    """``serving_default_image:0`` -> ``serving_default_image``."""
    return name.split(":", 1)[0]


def litert_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # optional runtime: extra `litert`  # noqa: F401
    except ImportError:
        return False
    return True


def default_threads(threads: int = 0) -> int:
    """``threads`` if set, else the cores this process may run on."""
    if threads > 0:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


MAX_AUTO_INTERPRETERS = 4


def pool_shape(interpreters: int = 0, threads: int = 0) -> tuple[int, int]:
    """(interpreters, threads each) for serving. Unset (0) values fill the cores this process may
    run on: one single-threaded interpreter per core (at most MAX_AUTO_INTERPRETERS, then threads
    grow), or as many interpreters of ``threads`` as fit, or ``interpreters`` sharing the cores."""
    cores = default_threads(0)
    if interpreters <= 0:
        interpreters = max(1, min(MAX_AUTO_INTERPRETERS, cores // threads if threads > 0 else cores))
    return interpreters, threads if threads > 0 else max(1, cores // interpreters)


class LiteRTModel:
    """One interpreter over one .tflite model: image tensor in, score tensor out, one image per invoke.

    ``run`` is serialized by a lock (an interpreter is not reentrant); separate instances run in
    parallel.
    """

    def __init__(self, model: bytes | Path, threads: int = 0, input_name: str | None = None,
                 output_name: str | None = None) -> None:
        content = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
        self.content = content  # the interpreter reads from this buffer: it must outlive it
        self.threads = default_threads(threads)
        try:
            self._interp = interpreter_class()(model_content=content, num_threads=self.threads)
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for a bad flatbuffer
            raise LiteRTError(f"LiteRT cannot load the model: {exc}") from exc
        inputs, outputs = self._io_details()
        self.input_name, self._in = self._pick(inputs, input_name, "input")
        self.output_name, self._out = self._pick(outputs, output_name, "output")
        shape = tuple(int(v) for v in self._in["shape"])
        if len(shape) != 4:
            raise LiteRTError(f"input {self.input_name!r} must be [batch, height, width, channels], is {list(shape)}")
        if shape[0] != 1:  # one image per invoke (see module doc)
            self._interp.resize_tensor_input(self._in["index"], [1, *shape[1:]])
        try:
            self._interp.allocate_tensors()
        except Exception as exc:
            raise LiteRTError(f"LiteRT cannot allocate the model's tensors: {exc}") from exc
        self.height, self.width, self.channels = shape[1], shape[2], shape[3]
        self.input_dtype = np.dtype(self._in["dtype"])
        self._in_index = int(self._in["index"])
        self._out_index = int(self._out["index"])
        out_shape = self._interp.get_output_details()  # shapes after allocation
        out_shape = next(d for d in out_shape if d["index"] == self._out_index)["shape"]
        self.classes = int(np.prod(out_shape[1:])) if len(out_shape) > 1 else int(out_shape[0])
        self._in_quant = self._quantization(self._in)
        self._out_quant = self._quantization(self._out)
        self._lock = threading.Lock()

    def _io_details(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Inputs and outputs keyed by signature alias (``serving_default``), else by tensor name."""
        signatures = self._interp.get_signature_list()
        if signatures:
            key = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in signatures else next(iter(signatures))
            runner: Any = self._interp.get_signature_runner(key)
            return dict(runner.get_input_details()), dict(runner.get_output_details())
        return ({_tensor_name(d["name"]): d for d in self._interp.get_input_details()},
                {_tensor_name(d["name"]): d for d in self._interp.get_output_details()})

    @staticmethod
    def _pick(details: dict[str, dict[str, Any]], wanted: str | None, kind: str) -> tuple[str, dict[str, Any]]:
        if wanted is not None and wanted in details:
            return wanted, details[wanted]
        if len(details) == 1:
            return next(iter(details.items()))
        raise LiteRTError(f"model has {kind}s {sorted(details)}; expected one named {wanted!r}")

    @staticmethod
    def _quantization(detail: dict[str, Any]) -> tuple[float, int] | None:
        scale, zero = detail.get("quantization", (0.0, 0))
        if np.dtype(detail["dtype"]).kind in "iu" and scale:
            return float(scale), int(zero)
        return None

    def image_input(self) -> ImageInput:
        """The image tensor as the embedded backend describes it (dtype of the model's input)."""
        return ImageInput(self.input_name, self.input_dtype.name, self.height, self.width, self.channels)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores (float32 [N, classes]) for an N x H x W x C batch."""
        if batch.ndim != 4 or batch.shape[1:] != (self.height, self.width, self.channels):
            raise LiteRTError(
                f"batch shape {list(batch.shape)} does not match the model input "
                f"[N, {self.height}, {self.width}, {self.channels}]")
        if self._in_quant is not None and batch.dtype != self.input_dtype:
            scale, zero = self._in_quant
            info = np.iinfo(self.input_dtype)
            batch = np.clip(np.rint(batch / scale + zero), info.min, info.max)
        if batch.dtype != self.input_dtype:
            batch = batch.astype(self.input_dtype)
        out = np.empty((batch.shape[0], self.classes), dtype=np.float32)
        with self._lock:
            interp = self._interp
            if interp is None:
                raise LiteRTError("model is closed")
            for i in range(batch.shape[0]):
                interp.set_tensor(self._in_index, batch[i:i + 1])
                interp.invoke()
                view = interp.tensor(self._out_index)()  # a view into LiteRT's buffer: copy, then drop
                if self._out_quant is None:
                    out[i] = view.reshape(-1)
                else:
                    scale, zero = self._out_quant
                    out[i] = (view.reshape(-1).astype(np.float32) - zero) * scale
                del view
        return out

    def close(self) -> None:
        with self._lock:
            self._interp = None


class LiteRTClassifier(ClassifierBase):
    """The :class:`edge.serving.base.Classifier` over a .tflite model: probabilities [N, classes].

    It holds ``interpreters`` LiteRT interpreters of ``threads`` threads each; ``classify`` may be
    called from that many threads at once, each call runs on a free interpreter (``concurrency``
    tells the pipeline how many inference threads to run).
    """

    def __init__(self, model: bytes | Path, info: ClassifierInfo, threads: int = 0, interpreters: int = 1) -> None:
        if interpreters < 1:
            raise LiteRTError(f"interpreters must be >= 1, got {interpreters}")
        first = LiteRTModel(model, threads=threads, input_name=info.image_input.name, output_name=info.output_name)
        want = info.image_input
        got = (first.height, first.width, first.channels)
        if got != (want.height, want.width, want.channels):
            first.close()
            raise LiteRTError(f"model input is {list(got)}, the version's signature says "
                              f"{[want.height, want.width, want.channels]}")
        self.model = first
        self.models = [first] + [
            LiteRTModel(first.content, threads=threads, input_name=first.input_name, output_name=first.output_name)
            for _ in range(interpreters - 1)]
        self._free: queue.SimpleQueue[LiteRTModel] = queue.SimpleQueue()
        for each in self.models:
            self._free.put(each)
        self.info = info
        self._softmax = info.metadata.activation == "softmax"

    def pooled(self, interpreters: int, threads: int) -> LiteRTClassifier:
        """A classifier over the same model with another pool shape (this one stays open)."""
        return LiteRTClassifier(self.model.content, self.info, threads=threads, interpreters=interpreters)

    @property
    def preferred_batch_size(self) -> int:
        """One image per invoke (see the module doc): batching adds latency, not throughput."""
        return 1

    @property
    def concurrency(self) -> int:
        """How many classify() calls can run at once (one per interpreter)."""
        return len(self.models)

    @property
    def threads(self) -> int:
        """Threads of each interpreter."""
        return self.model.threads

    def warm_up(self, batch: np.ndarray) -> None:
        """Run `batch` once on every interpreter, so no first frame pays a cold invoke."""
        for each in self.models:
            each.run(batch)

    def classify(self, batch: np.ndarray) -> np.ndarray:
        model = self._free.get()
        try:
            scores = model.run(batch)
        finally:
            self._free.put(model)
        return softmax(scores) if self._softmax else scores

    def close(self) -> None:
        for each in self.models:
            each.close()
