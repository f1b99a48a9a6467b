"""The embedded backend: the model runs inside the gateway process, with TensorFlow, LiteRT or OpenVINO.

``runtime="auto"`` (config ``serving.runtime``) lets :mod:`edge.serving.selection` pick the
fastest runtime and precision that reproduce the version's golden outputs, and caches the decision
beside the version; ``"litert"``/``"openvino"`` prefer that runtime whenever one of its candidates
passes; ``"tensorflow"`` forces TensorFlow. ``precision="fp32"`` (``serving.precision``) never tries
int8. TensorFlow is imported only to convert, to measure, or to serve: a cached LiteRT or OpenVINO
choice never imports it."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ClassifierError
from edge.models.metadata import PreprocessSpec, read_version_metadata
from edge.models.store import ModelVersion
from edge.serving.base import DEFAULT_MAX_BATCH_SIZE, ClassifierBase, ClassifierInfo, ImageInput, softmax
from edge.serving.candidates import load_served
from edge.serving.litert import LiteRTModel, pool_shape
from edge.serving.savedmodel import SavedModelRunner, SignatureInfo
from edge.serving.selection import (
    DEFAULT_TOLERANCE,
    PRECISIONS,
    RUNTIMES,
    SHIPPED_FILE,
    Selection,
    cache_key,
    load_cached,
    save_cache,
    select,
    select_in_subprocess,
)

logger = logging.getLogger(__name__)


def image_input_of(signature: SignatureInfo) -> ImageInput:
    """The signature's image input: rank 4, N x H x W x 3 (or 1), fixed height and width."""
    candidates = [t for t in signature.inputs.values() if t.shape is not None and len(t.shape) == 4]
    if len(signature.inputs) != 1 or not candidates:
        described = {k: (v.dtype, v.shape) for k, v in signature.inputs.items()}
        raise ClassifierError(
            f"signature {signature.name!r} must take exactly one image tensor [batch, height, width, channels]; "
            f"it takes {described}"
        )
    tensor = candidates[0]
    _, height, width, channels = tensor.shape  # type: ignore[misc]
    if height is None or width is None:
        raise ClassifierError(
            f"input {tensor.name!r} has a dynamic height/width {tensor.shape}; export the model with a fixed input size"
        )
    if channels not in (1, 3):
        raise ClassifierError(f"input {tensor.name!r} must have 1 or 3 channels, has {channels}")
    if tensor.dtype not in ("uint8", "float32", "float16", "int32"):
        raise ClassifierError(f"input {tensor.name!r} dtype {tensor.dtype} is not an image dtype")
    return ImageInput(tensor.name, tensor.dtype, int(height), int(width), int(channels))


def scores_output_of(signature: SignatureInfo, preferred: str | None) -> str:
    """The output holding class scores: the one edge.json names, else the only rank-2 output."""
    if preferred:
        if preferred not in signature.outputs:
            raise ClassifierError(
                f"edge.json names output {preferred!r} but signature {signature.name!r} has {sorted(signature.outputs)}"
            )
        return preferred
    rank2 = [k for k, v in signature.outputs.items() if v.shape is not None and len(v.shape) == 2]
    if len(rank2) == 1:
        return rank2[0]
    if len(signature.outputs) == 1:
        return next(iter(signature.outputs))
    raise ClassifierError(
        f"cannot tell which of the outputs {sorted(signature.outputs)} holds class scores; "
        "name it in assets.extra/edge.json as output.name"
    )


class EmbeddedClassifier(ClassifierBase):
    """A model version classifying in-process, with the runtime chosen by :mod:`runtime_selection`.

    ``selection`` (a dict) says which runtime serves, why, and what each candidate measured; ``health()``
    reports it under ``model.backend``.
    """

    def __init__(
        self,
        version: ModelVersion,
        preprocess_override: PreprocessSpec | None = None,
        threads: int = 0,
        runtime: str = "auto",
        isolate_selection: bool | None = None,
        interpreters: int = 0,
        precision: str = "auto",
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    ) -> None:
        """``isolate_selection``: convert and time in a child process, so that this process imports
        TensorFlow only if TensorFlow ends up serving. None = isolate when TensorFlow is not imported yet.
        ``threads``/``interpreters``: how LiteRT and OpenVINO serve (see :func:`edge.serving.litert.pool_shape`);
        ``max_batch_size``: how TensorFlow serves (serving.max_batch_size). The runtime is chosen by
        timing every candidate in that serving shape (:mod:`edge.serving.selection`)."""
        if runtime not in RUNTIMES:
            raise ClassifierError(f"serving.runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if precision not in PRECISIONS:
            raise ClassifierError(f"serving.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.runner: SavedModelRunner | None = None
        self._served: Any = None
        self._lock = threading.Lock()
        path = Path(version.path)
        metadata = read_version_metadata(path, preprocess_override)
        own_preprocess = read_version_metadata(path).preprocess  # golden outputs were made with these
        selection: Selection | None = None
        info: ClassifierInfo | None = None
        key = cache_key(path, runtime, threads, DEFAULT_TOLERANCE, precision, interpreters,
                        max_batch_size) if runtime != "tensorflow" else None
        if key is not None:
            selection = load_cached(path, key)
            if selection is None and (path / "saved_model.pb").is_file() and (
                    isolate_selection if isolate_selection is not None else "tensorflow" not in sys.modules):
                selection = select_in_subprocess(path, version, runtime, threads, key, precision, interpreters,
                                                 max_batch_size)
            if selection is not None and selection.runtime != "tensorflow":
                info = self._served_from_cache(version, metadata, selection, threads, interpreters)
                if info is None:
                    selection = None
        if info is None and ((path / "saved_model.pb").is_file() or runtime == "tensorflow"):
            self.runner = SavedModelRunner(path, threads=threads)
            signature = self.runner.signature()
            info = ClassifierInfo(model_name=version.name, version=version.version,
                                  image_input=image_input_of(signature),
                                  output_name=scores_output_of(signature, metadata.output_name),
                                  metadata=metadata, runtime="tensorflow")
            if runtime == "tensorflow":
                selection = Selection(runtime="tensorflow", candidate="tensorflow", requested=runtime,
                                      reason="serving.runtime = tensorflow", verified_on="not checked (forced)")
            elif selection is None:
                self.info = info
                selection, self._served = select(path, info, self._tf_classify, preprocess=own_preprocess,
                                                 requested=runtime, threads=threads, precision=precision,
                                                 interpreters=interpreters, max_batch_size=max_batch_size)
                assert key is not None
                save_cache(path, key, selection)
        elif info is None:  # a LiteRT-only version folder (model.tflite, no SavedModel)

            probe = LiteRTModel(path / SHIPPED_FILE, threads=1, output_name=metadata.output_name)
            info = ClassifierInfo(model_name=version.name, version=version.version, image_input=probe.image_input(),
                                  output_name=probe.output_name, metadata=metadata, runtime="litert")
            probe.close()
            selection, self._served = select(path, info, None, preprocess=own_preprocess, requested=runtime,
                                             threads=threads, precision=precision, interpreters=interpreters,
                                             max_batch_size=max_batch_size)
            if key is not None:
                save_cache(path, key, selection)
        assert selection is not None and info is not None
        if self._served is not None:  # built and timed in its serving shape
            self.runner = None  # the TensorFlow model's memory goes; the library stays imported
        self.info = replace(info, runtime=selection.runtime)
        self.selection: dict[str, Any] = selection.as_dict()
        self._log_selection(selection)
        self._warm_up()

    def _served_from_cache(self, version: ModelVersion, metadata: Any, selection: Selection,
                           threads: int, interpreters: int) -> ClassifierInfo | None:
        """Serve the cached LiteRT/OpenVINO model without importing TensorFlow; None if it cannot load."""
        try:
            sig = selection.signature
            height, width, channels = sig["input"]["shape"]
            info = ClassifierInfo(model_name=version.name, version=version.version,
                                  image_input=ImageInput(sig["input"]["name"], sig["input"]["dtype"],
                                                         int(height), int(width), int(channels)),
                                  output_name=sig["output"], metadata=metadata, runtime=selection.runtime)
            count, each = pool_shape(interpreters, threads)  # built in its serving shape: no reshaping
            self._served = load_served(selection.runtime, Path(selection.model_file or ""), info, each, count)
            return info
        except Exception as exc:  # a damaged cache must never stop a version from loading
            logger.warning("cached %s model %s unusable (%s); selecting the runtime again",
                           selection.runtime, selection.model_file, exc)
            self._served = None
            return None

    def _log_selection(self, selection: Selection) -> None:
        timings = ", ".join(
            f"{k}: {'ok' if r.ok else 'refused'}"
            + (f" {r.img_per_s:.1f} img/s" if r.img_per_s else "")
            + (f" (max diff {r.max_abs_diff:.2g})" if r.max_abs_diff is not None else "")
            for k, r in selection.candidates.items())
        logger.info("model %s version %s runtime %s (%s)%s: %s%s", self.info.model_name, self.info.version,
                    selection.candidate, selection.precision, " (cached decision)" if selection.cached else "", selection.reason,
                    f" [{timings}]" if timings else "")

    def _tf_classify(self, batch: np.ndarray) -> np.ndarray:
        assert self.runner is not None
        with self._lock:
            out = self.runner.run({self.info.image_input.name: batch}, output_filter=[self.info.output_name])
        scores = np.asarray(out[self.info.output_name], dtype=np.float32)
        if scores.ndim != 2:
            scores = scores.reshape(scores.shape[0], -1)
        if self.info.metadata.activation == "softmax":
            scores = softmax(scores)
        return scores

    def _warm_up(self) -> None:
        """Run one batch so the first real frame does not pay graph tracing and allocation."""
        shape = (1, self.info.image_input.height, self.info.image_input.width, self.info.image_input.channels)
        zeros = np.zeros(shape, dtype=self.info.image_input.dtype)
        if self._served is not None:
            self._served.warm_up(zeros)
        scores = self.classify(zeros)
        labels = self.info.metadata.labels
        if labels and scores.shape[-1] != len(labels):
            raise ClassifierError(
                f"model outputs {scores.shape[-1]} classes but labels.txt has {len(labels)} lines"
            )
        logger.info(
            "model %s version %s ready on %s: input %s %s %dx%dx%d, output %s (%d classes)",
            self.info.model_name, self.info.version, self.info.runtime, self.info.image_input.name,
            self.info.image_input.dtype, self.info.image_input.height, self.info.image_input.width,
            self.info.image_input.channels, self.info.output_name, scores.shape[-1],
        )

    @property
    def preferred_batch_size(self) -> int | None:
        """A hint for the pipeline: LiteRT runs one image per invoke (batches add latency, no
        throughput); TensorFlow gains from batches (None: use serving.max_batch_size)."""
        return 1 if self._served is not None else None

    @property
    def concurrency(self) -> int:
        """classify() calls that may run at once: one per LiteRT interpreter; TensorFlow: 1."""
        return self._served.concurrency if self._served is not None else 1

    def classify(self, batch: np.ndarray) -> np.ndarray:
        litert = self._served
        scores: np.ndarray = litert.classify(batch) if litert is not None else self._tf_classify(batch)
        return scores

    def health(self) -> dict[str, Any]:
        doc = {"backend": "embedded", "state": "ok", "runtime": self.info.runtime,
               "precision": self.selection.get("precision", "fp32"), "selection": self.selection}
        if self._served is not None:
            doc["interpreters"] = self._served.concurrency
            doc["threads_per_interpreter"] = self._served.threads
        return doc

    def close(self) -> None:
        if self._served is not None:
            self._served.close()
        self.runner = None
