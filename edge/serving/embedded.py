"""The embedded backend: the model runs inside the gateway process (TensorFlow)."""
from __future__ import annotations

import logging
import threading

import numpy as np

from edge.models.metadata import PreprocessSpec, read_version_metadata
from edge.models.store import ModelVersion
from edge.serving.base import ClassifierError, ClassifierInfo, ImageInput, softmax
from edge.serving.savedmodel import SavedModelRunner, SignatureInfo

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


class EmbeddedClassifier:
    """A SavedModel version classifying in-process."""

    def __init__(
        self,
        version: ModelVersion,
        preprocess_override: PreprocessSpec | None = None,
        threads: int = 0,
    ) -> None:
        self.runner = SavedModelRunner(version.path, threads=threads)
        signature = self.runner.signature()
        metadata = read_version_metadata(version.path, preprocess_override)
        image_input = image_input_of(signature)
        output = scores_output_of(signature, metadata.output_name)
        self.info = ClassifierInfo(
            model_name=version.name,
            version=version.version,
            image_input=image_input,
            output_name=output,
            metadata=metadata,
            runtime="tensorflow",
        )
        self._lock = threading.Lock()
        self._warm_up()

    def _warm_up(self) -> None:
        """Run one batch so the first real frame does not pay graph tracing and allocation."""
        shape = (1, self.info.image_input.height, self.info.image_input.width, self.info.image_input.channels)
        scores = self.classify(np.zeros(shape, dtype=self.info.image_input.dtype))
        labels = self.info.metadata.labels
        if labels and scores.shape[-1] != len(labels):
            raise ClassifierError(
                f"model outputs {scores.shape[-1]} classes but labels.txt has {len(labels)} lines"
            )
        logger.info(
            "model %s version %s ready: input %s %s %dx%dx%d, output %s (%d classes)",
            self.info.model_name, self.info.version, self.info.image_input.name, self.info.image_input.dtype,
            self.info.image_input.height, self.info.image_input.width, self.info.image_input.channels,
            self.info.output_name, scores.shape[-1],
        )

    def classify(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self.runner.run({self.info.image_input.name: batch}, output_filter=[self.info.output_name])
        scores = np.asarray(out[self.info.output_name], dtype=np.float32)
        if scores.ndim != 2:
            scores = scores.reshape(scores.shape[0], -1)
        if self.info.metadata.activation == "softmax":
            scores = softmax(scores)
        return scores

    def close(self) -> None:
        self.runner = None  # type: ignore[assignment]
