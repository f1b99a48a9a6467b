"""OpenVINO runtime for the embedded backend: an OpenVINO IR (``.xml`` + ``.bin``) run in-process on the CPU.

A runtime candidate of :mod:`edge.serving.selection` (x86; the ``openvino`` extra). The IR comes from
the version folder when it ships one (``model.xml`` + ``model.bin``, e.g. an ``openvino`` variant of
the OCI index), else it is converted from the SavedModel or ``model.tflite`` by OpenVINO's own
frontends (``Core.read_model``: no TensorFlow import, no conversion telemetry) and saved with fp32
weights (``compress_to_fp16=False``: fp16 weights change scores by ~1e-2).

Compiled with ``INFERENCE_PRECISION_HINT = f32``: left unset, OpenVINO picks bf16 on CPUs with
AVX512_BF16/AMX, which changes scores by ~0.1 and flips top-1 classes. The result of a check
therefore depends on the CPU; :func:`cpu_signature` goes into the selection's cache key.

Served like LiteRT: ``interpreters`` CPU streams of ``threads`` threads each on one compiled model,
one infer request per stream, one image per request, one inference thread each.
"""
from __future__ import annotations

import logging
import queue
import threading
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ClassifierError
from edge.serving.base import ClassifierBase, ClassifierInfo, softmax
from edge.serving.litert import default_threads

logger = logging.getLogger(__name__)

SHIPPED_XML = "model.xml"  # an IR shipped inside the version folder (with model.bin)
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def openvino_available() -> bool:
    try:
        import openvino  # optional runtime: extra `openvino`  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_version() -> str | None:
    """The installed openvino package's version, without importing it (~60 MB RSS): a cache-key field."""
    try:
        return importlib_metadata.version("openvino")
    except importlib_metadata.PackageNotFoundError:
        return None


def cpu_signature() -> str:
    """The CPU features that change OpenVINO's kernels (and so its numbers): part of the cache key."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return ",".join(f for f in _CPU_FLAGS if f in flags) or "baseline"


def convert_to_ir(source: Path, target_xml: Path) -> Path:
    """Convert a SavedModel folder or a .tflite file to an fp32 IR at ``target_xml`` (+ .bin)."""
    import openvino as ov  # optional runtime: extra `openvino`

    try:
        model = ov.Core().read_model(str(source))
    except Exception as exc:  # unsupported ops, unreadable files
        raise ClassifierError(f"OpenVINO cannot read {source}: {exc}") from exc
    target_xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = target_xml.with_name(target_xml.stem + ".partial.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(target_xml.with_suffix(".bin"))
    tmp.replace(target_xml)
    return target_xml


class OpenVINOClassifier(ClassifierBase):
    """The :class:`edge.serving.base.Classifier` over an OpenVINO IR: probabilities [N, classes].

    ``interpreters`` infer requests of ``threads`` threads each on one compiled model; ``classify`` may
    be called from that many threads at once (``concurrency``), each call on a free request.
    """

    runtime = "openvino"

    def __init__(self, xml: Path, info: ClassifierInfo, threads: int = 0, interpreters: int = 1) -> None:
        import openvino as ov  # optional runtime: extra `openvino`

        if interpreters < 1:
            raise ClassifierError(f"interpreters must be >= 1, got {interpreters}")
        self.xml = Path(xml)
        self.info = info
        self._threads = default_threads(threads)
        core = ov.Core()
        try:
            model = core.read_model(str(self.xml))
            self._compiled = core.compile_model(model, "CPU", {  # one stream per inference thread
                "NUM_STREAMS": interpreters, "INFERENCE_NUM_THREADS": self._threads * interpreters,
                "INFERENCE_PRECISION_HINT": "f32"})
        except Exception as exc:
            raise ClassifierError(f"OpenVINO cannot compile {self.xml}: {exc}") from exc
        self.precision_hint = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        inputs = self._compiled.inputs
        if len(inputs) != 1:
            raise ClassifierError(f"{self.xml}: OpenVINO model takes {len(inputs)} inputs, expected one image")
        shape = inputs[0].get_partial_shape()
        want = info.image_input
        dims = [d.get_length() if d.is_static else None for d in shape]
        if len(dims) != 4 or dims[1:] != [want.height, want.width, want.channels]:
            raise ClassifierError(f"{self.xml}: input shape {dims}, the version's signature says "
                                  f"[N, {want.height}, {want.width}, {want.channels}]")
        self._output = self._pick_output(info.output_name)
        self._dtype = np.dtype(want.dtype)
        self._requests = [self._compiled.create_infer_request() for _ in range(interpreters)]
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for request in self._requests:
            self._free.put(request)
        self._softmax = info.metadata.activation == "softmax"
        self._closed = threading.Event()

    def _pick_output(self, name: str) -> Any:
        outputs = self._compiled.outputs
        for out in outputs:
            if name in out.get_names():
                return out
        if len(outputs) == 1:
            return outputs[0]
        raise ClassifierError(f"{self.xml}: no output named {name!r} among "
                              f"{[sorted(o.get_names()) for o in outputs]}")

    @property
    def preferred_batch_size(self) -> int:
        return 1

    @property
    def concurrency(self) -> int:
        return len(self._requests)

    @property
    def threads(self) -> int:
        return self._threads

    def warm_up(self, batch: np.ndarray) -> None:
        for request in self._requests:
            request.infer({0: np.ascontiguousarray(batch[:1], dtype=self._dtype)})

    def classify(self, batch: np.ndarray) -> np.ndarray:
        if self._closed.is_set():
            raise ClassifierError("OpenVINO model is closed")
        batch = np.ascontiguousarray(batch, dtype=self._dtype)
        out = np.empty((batch.shape[0], 0), np.float32)
        request = self._free.get()
        try:
            rows = []
            for i in range(batch.shape[0]):
                request.infer({0: batch[i:i + 1]}, share_inputs=True)
                rows.append(np.array(request.get_tensor(self._output).data, dtype=np.float32).reshape(1, -1))
            out = np.concatenate(rows) if rows else out
        finally:
            self._free.put(request)
        return softmax(out) if self._softmax else out

    def close(self) -> None:
        self._closed.set()
