"""TF Serving's InputToSerializedExampleTensor: a Classify/Regress `Input` as a [N] string tensor."""
from __future__ import annotations

import logging
from typing import Any

import grpc
import numpy as np

from edge.model_server.status import ServingError

logger = logging.getLogger(__name__)


def serialized_examples(request_input: Any) -> np.ndarray:
    """Serialized tf.Examples, one per example; with a context, each example gets its features.

    Concatenated serializations merge, so ``context + example`` is the example with the context's
    features added, as TF Serving builds it.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        blobs = [ex.SerializeToString() for ex in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = request_input.example_list_with_context.context.SerializeToString()
        blobs = [ctx + ex.SerializeToString() for ex in request_input.example_list_with_context.examples]
    else:
        blobs = []
    if not blobs:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    out = np.empty(len(blobs), dtype=object)
    out[:] = blobs
    return out
