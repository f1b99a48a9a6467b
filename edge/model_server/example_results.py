"""Classify and Regress: which signature qualifies, and how its outputs become results (``classifier.cc``,
``regressor.cc``): TF Serving's checks, codes and messages, in its order. Pure functions over
SignatureDefs and numpy outputs; :mod:`edge.model_server.handlers` runs the model."""
from __future__ import annotations

import logging
from typing import Any

import grpc
import numpy as np
from google.protobuf import text_format

from edge.model_server.status import ServingError
from edge.serving.tensors import DT_FLOAT, DT_STRING, datatype_of, dtype_name

logger = logging.getLogger(__name__)
Code = grpc.StatusCode


def _err(code: grpc.StatusCode, message: str) -> ServingError:
    return ServingError(code, message)


def _debug(sig: Any) -> str:
    return str(text_format.MessageToString(sig))


def task_signature(defs: dict[str, Any], sig_name: str, method: str, kind: str, method_name_check: bool) -> Any:
    """The signature a Classify/Regress request names (``classifier.cc`` GetClassificationSignatureDef).

    Like TF Serving, method_name is checked only with --enable_signature_method_name_check: by
    default any signature of the right shape qualifies, such as a TF2 ``tf.saved_model.save``
    signature (method_name tensorflow/serving/predict) that takes serialized tf.Examples."""
    sig = defs.get(sig_name)
    if sig is None:
        raise _err(Code.INVALID_ARGUMENT, f"No signature was found with the name: {sig_name}")
    if method_name_check and sig.method_name != method:
        raise _err(Code.INVALID_ARGUMENT,
                   f"Expected {kind} signature method_name to be {method}. Was: {sig.method_name}")
    return sig

def classify_outputs(sig: Any) -> list[str]:
    """PreProcessClassification: one input keyed `inputs`, outputs `classes` and/or `scores`."""
    if len(sig.inputs) != 1:
        raise _err(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
    if len(sig.outputs) not in (1, 2):
        raise _err(Code.INVALID_ARGUMENT, f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if "inputs" not in sig.inputs:
        raise _err(Code.INVALID_ARGUMENT, f"No classification inputs found in SignatureDef: {_debug(sig)}")
    outs = [k for k in ("classes", "scores") if k in sig.outputs]
    if not outs:
        raise _err(Code.INVALID_ARGUMENT, 'Expected classification signature outputs to contain at least '
                   f'one of "classes" or "scores". Signature was: {_debug(sig)}')
    return outs

def regress_outputs(sig: Any) -> list[str]:
    """PreProcessRegression: one input keyed `inputs`, one output keyed `outputs`."""
    if len(sig.inputs) != 1:
        raise _err(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
    if len(sig.outputs) != 1:
        raise _err(Code.INVALID_ARGUMENT, "Expected one output Tensor.")
    if "inputs" not in sig.inputs:
        raise _err(Code.INVALID_ARGUMENT, f"No regression inputs found in SignatureDef: {_debug(sig)}")
    if "outputs" not in sig.outputs:
        raise _err(Code.INVALID_ARGUMENT, f"No regression outputs found in SignatureDef: {_debug(sig)}")
    return ["outputs"]

def _check_class_tensor(label: str, tensor: np.ndarray, dt: int, n: int) -> None:
    if tensor.ndim != 2:
        raise _err(Code.INVALID_ARGUMENT, "Expected Tensor shape: [batch_size num_classes] but got "
                   f"[{','.join(map(str, tensor.shape))}]")
    if datatype_of(tensor) != dt:
        raise _err(Code.INVALID_ARGUMENT,
                   f"Expected {label} Tensor of {dtype_name(dt)}. Got: {dtype_name(datatype_of(tensor))}")
    if tensor.shape[0] != n:
        raise _err(Code.INVALID_ARGUMENT, f"Expected {label} output batch size of {n}. Got: {tensor.shape[0]}")

def fill_classification(result: Any, outputs: dict[str, np.ndarray], n: int) -> None:
    """PostProcessClassificationResult: classes DT_STRING [n, k], scores DT_FLOAT [n, k], in TF's order."""
    classes = np.asarray(outputs["classes"]) if "classes" in outputs else None
    scores = np.asarray(outputs["scores"]) if "scores" in outputs else None
    if classes is not None:
        _check_class_tensor("classes", classes, DT_STRING, n)
    if scores is not None:
        _check_class_tensor("scores", scores, DT_FLOAT, n)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise _err(Code.INVALID_ARGUMENT, "Tensors class and score should match in dim_size(1). "
                   f"Got {classes.shape[1]} vs. {scores.shape[1]}")
    shaped = classes if classes is not None else scores
    assert shaped is not None  # the signature has classes or scores (checked before running)
    for i in range(n):
        item = result.classifications.add()
        for c in range(shaped.shape[1]):
            cl = item.classes.add()
            if classes is not None:
                value = classes[i][c]
                cl.label = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if scores is not None:
                cl.score = float(scores[i][c])

def fill_regression(result: Any, outputs: dict[str, np.ndarray], n: int) -> None:
    """PostProcessRegressionResult: DT_FLOAT [n] or [n, 1], checks in TF's order."""
    t = np.asarray(outputs["outputs"])
    if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
        raise _err(Code.INVALID_ARGUMENT, "Expected output Tensor shape to be either [batch_size] or "
                   f"[batch_size, 1] but got [{','.join(map(str, t.shape))}]")
    if t.shape[0] != n:
        raise _err(Code.INVALID_ARGUMENT,
                   f"Input batch size did not match output batch size: {n} vs. {t.shape[0]}")
    if datatype_of(t) != DT_FLOAT:
        raise _err(Code.INVALID_ARGUMENT,
                   f"Expected output Tensor of DT_FLOAT.  Got: {dtype_name(datatype_of(t))}")
    for v in t.reshape(-1):
        result.regressions.add(value=float(v))
