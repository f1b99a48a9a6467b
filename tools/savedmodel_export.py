"""Save a Keras model as a TF Serving SavedModel with one named-input, named-output signature."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def export_serving(model, target: Path, input_name: str, input_shape: list[int | None],
                   input_dtype: str, output_name: str) -> None:
    """Write ``model`` to ``target`` with signature ``serving_default``:
    ``{input_name: input_dtype input_shape} -> {output_name: model(x)}``.

    A plain ``tf.Module`` tracking each variable once is saved rather than keras'
    ``ExportArchive``, which stores every variable twice (twice the size on disk).
    """
    import tensorflow as tf

    module = tf.Module()
    module.weights = [getattr(w, "value", w) for w in model.weights]

    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.as_dtype(input_dtype),
                                                 name=input_name)])
    def serve(x):
        return {output_name: model(x, training=False)}

    module.serve = serve
    tf.saved_model.save(module, str(target), signatures={"serving_default": serve})
    logger.debug("saved %s (%s -> %s) to %s", model.name, input_name, output_name, target)
