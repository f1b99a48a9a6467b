"""TF Serving's request semantics, independent of the transport (gRPC and REST both call these).

Each method takes a request message (from the server's private proto pool) and returns the
response message, or raises :class:`ServingError` with TF Serving's status code and wording
(``predict_util.cc``, ``classifier.cc``, ``regressor.cc``, ``multi_inference.cc``,
``get_model_metadata_impl.cc``, ``get_model_status_impl.cc``, ``model_service_impl.cc``).
Deliberately like TF Serving: no shape check against the signature, the resolved model spec is
echoed, a missing signature is FAILED_PRECONDITION for Predict and INVALID_ARGUMENT for
Classify/Regress.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import text_format

from edge.errors import TensorConversionError
from edge.model_server.example_results import (
    classify_outputs,
    fill_classification,
    fill_regression,
    regress_outputs,
    task_signature,
)
from edge.model_server.examples import serialized_examples
from edge.model_server.metrics import ServerMetrics
from edge.model_server.signatures import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    REGRESS_METHOD,
    dtype_label,
    signature_defs,
)
from edge.model_server.status import ServingError
from edge.serving.protos import messages
from edge.serving.tensors import (
    to_ndarray,
    to_proto_content,
    to_proto_field,
)

logger = logging.getLogger(__name__)
Code = grpc.StatusCode


def _err(code: grpc.StatusCode, message: str) -> ServingError:
    return ServingError(code, message)


def _version_of(spec: Any) -> tuple[int | None, str | None]:
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return int(spec.version.value), None
    if which == "version_label":
        return None, spec.version_label or None
    return None, None


def _debug(sig: Any) -> str:
    return str(text_format.MessageToString(sig))


class ServingCore:
    """The PredictionService and ModelService operations over a ServableManager."""

    def __init__(self, manager: Any, metrics: ServerMetrics | None = None, *,
                 method_name_check: bool = False, tensor_content: bool = False,
                 reload_config: Callable[[Any], None] | None = None) -> None:
        """`tensor_content`: answer Predict with packed tensor_content (TF Serving's
        --enable_serialization_as_tensor_content) instead of the typed value fields."""
        self.manager = manager
        self.metrics = metrics or ServerMetrics()
        self.method_name_check = method_name_check
        self._encode = to_proto_content if tensor_content else to_proto_field
        self._reload_config = reload_config
        self.pb = messages()

    # ---------------------------------------------------------------- helpers
    def _acquire(self, spec: Any) -> Any:
        version, label = _version_of(spec)
        return self.manager.acquire(spec.name, version=version, label=label)

    def _make_spec(self, target: Any, name: str, signature: str | None, version: int | None) -> None:
        target.Clear()
        target.name = name
        if signature is not None:
            target.signature_name = signature or DEFAULT_SIGNATURE
        if version is not None:
            target.version.value = int(version)

    def _run(self, servable: Any, api: str, inputs: dict[str, np.ndarray], signature: str,
             outputs: list[str] | None, deadline: float | None) -> dict[str, np.ndarray]:
        if deadline is not None and time.monotonic() > deadline:
            raise _err(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        start = time.monotonic()
        try:
            result: dict[str, np.ndarray] = servable.run(inputs, signature, outputs)
        except ServingError:
            raise
        except Exception as exc:  # a runtime error the runtime did not classify
            logger.warning("%s on %s:%s failed: %s", api, servable.name, servable.version, exc)
            raise _err(Code.INTERNAL, str(exc) or type(exc).__name__) from exc
        finally:
            self.metrics.record_runtime(servable.name, api, str(getattr(servable, "runtime", "") or "TF2"),
                                        time.monotonic() - start)
        return result

    # ---------------------------------------------------------------- Predict
    def predict(self, request: Any, deadline: float | None = None) -> Any:
        if not request.HasField("model_spec"):
            raise _err(Code.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        with self._acquire(spec) as servable:
            defs = signature_defs(servable)
            sig_name = spec.signature_name or DEFAULT_SIGNATURE
            sig = defs.get(sig_name)
            if sig is None:
                raise _err(Code.FAILED_PRECONDITION, f'Serving signature key "{sig_name}" not found.')
            if self.method_name_check and sig.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
                raise _err(Code.INTERNAL, "Expected prediction signature method_name to be one of "
                           f"{{{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {sig.method_name}")
            inputs = self._predict_inputs(sig, request)
            aliases = self._output_aliases(sig, request.output_filter)
            result = self._run(servable, "Predict", inputs, sig_name,
                               aliases if list(request.output_filter) else None, deadline)
            response = self.pb.PredictResponse()
            self._make_spec(response.model_spec, spec.name, sig_name, servable.version)
            for alias in aliases:
                if alias not in result:
                    raise _err(Code.INTERNAL, f"output tensor {alias} missing from the model's result")
                response.outputs[alias].CopyFrom(self._encode(np.asarray(result[alias])))
            return response

    def _predict_inputs(self, sig: Any, request: Any) -> dict[str, np.ndarray]:
        req_keys, sig_keys = set(request.inputs), set(sig.inputs)
        if len(req_keys) > len(sig_keys) or (len(req_keys) < len(sig_keys) and not len(sig.defaults)):
            raise _err(Code.INVALID_ARGUMENT,
                       f"input size does not match signature: {len(req_keys)}!={len(sig_keys)} "
                       f"len({{{','.join(sorted(req_keys))}}}) != len({{{','.join(sorted(sig_keys))}}}). "
                       f"Sent extra: {{{','.join(sorted(req_keys - sig_keys))}}}. "
                       f"Missing but required: {{{','.join(sorted(sig_keys - req_keys))}}}.")
        arrays: dict[str, np.ndarray] = {}
        for alias in sorted(req_keys):
            if alias not in sig.inputs:
                raise _err(Code.INVALID_ARGUMENT,
                           f"input tensor alias not found in signature: {alias}. "
                           f"Inputs expected to be in the set {{{','.join(sorted(sig_keys))}}}.")
            proto = request.inputs[alias]
            expected = sig.inputs[alias].dtype
            if expected and proto.dtype != expected:
                position = sorted(sig_keys).index(alias)
                raise _err(Code.INVALID_ARGUMENT, f"Expects arg[{position}] to be {dtype_label(expected)} "
                           f"but {dtype_label(proto.dtype)} is provided")
            try:
                arrays[alias] = to_ndarray(proto)
            except (TensorConversionError, ValueError, TypeError):
                raise _err(Code.INVALID_ARGUMENT, f"tensor parsing error: {alias}") from None
        for alias in sorted(sig_keys - req_keys):  # signature defaults fill missing inputs
            try:
                arrays[alias] = to_ndarray(sig.defaults[alias])
            except (KeyError, TensorConversionError, ValueError):
                raise _err(Code.INVALID_ARGUMENT,
                           f"Signature input alias: {alias}(feed name: {sig.inputs[alias].name}) not found "
                           f"in request and no default value provided.") from None
        return arrays

    @staticmethod
    def _output_aliases(sig: Any, output_filter: Any) -> list[str]:
        wanted = list(output_filter)
        seen: set[str] = set()
        for alias in wanted:
            if alias not in sig.outputs:
                raise _err(Code.INVALID_ARGUMENT,
                           f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                           f"the set {{{','.join(sorted(sig.outputs))}}}.")
            if alias in seen:
                raise _err(Code.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return wanted or sorted(sig.outputs)

    # ---------------------------------------------------------------- Classify / Regress
    def classify(self, request: Any, deadline: float | None = None) -> Any:
        return self._classify_or_regress(request, deadline, classify=True)

    def regress(self, request: Any, deadline: float | None = None) -> Any:
        return self._classify_or_regress(request, deadline, classify=False)

    def _classify_or_regress(self, request: Any, deadline: float | None, *, classify: bool) -> Any:
        if not request.HasField("model_spec"):
            raise _err(Code.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        with self._acquire(spec) as servable:
            sig_name = spec.signature_name or DEFAULT_SIGNATURE
            defs = signature_defs(servable)
            if classify:
                sig = task_signature(defs, sig_name, CLASSIFY_METHOD, "classification", self.method_name_check)
                outs = classify_outputs(sig)
            else:
                sig = task_signature(defs, sig_name, REGRESS_METHOD, "regression", self.method_name_check)
                outs = regress_outputs(sig)
            examples = serialized_examples(request.input)
            self.metrics.record_examples(spec.name, len(examples))
            api = "Classify" if classify else "Regress"
            result = self._run(servable, api, {"inputs": examples}, sig_name, outs, deadline)
            if classify:
                response = self.pb.ClassificationResponse()
                fill_classification(response.result, result, len(examples))
            else:
                response = self.pb.RegressionResponse()
                fill_regression(response.result, result, len(examples))
            self._make_spec(response.model_spec, spec.name, sig_name, servable.version)
            return response

    # ---------------------------------------------------------------- MultiInference
    def multi_inference(self, request: Any, deadline: float | None = None) -> Any:
        """``multi_inference.cc``: the servable of the first task's spec, then every task checked in
        one pass (same model, no duplicate signature, known signature, classify or regress), then
        each task run on the same examples."""
        first = request.tasks[0].model_spec if len(request.tasks) else self.pb.ModelSpec()
        response = self.pb.MultiInferenceResponse()
        with self._acquire(first) as servable:
            defs = signature_defs(servable)
            plans = []
            names: set[str] = set()
            for task in request.tasks:
                if not task.model_spec.name:
                    raise _err(Code.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
                if task.model_spec.name != first.name:
                    raise _err(Code.INVALID_ARGUMENT,
                               "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
                sig_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
                if sig_name in names:
                    raise _err(Code.INVALID_ARGUMENT, f"Duplicate evaluation of signature: {sig_name}")
                names.add(sig_name)
                if sig_name not in defs:
                    raise _err(Code.INVALID_ARGUMENT, f"Requested signature not found in model graph: {sig_name}")
                if task.method_name == CLASSIFY_METHOD:
                    sig = task_signature(defs, sig_name, CLASSIFY_METHOD, "classification", self.method_name_check)
                    outs = classify_outputs(sig)
                elif task.method_name == REGRESS_METHOD:
                    sig = task_signature(defs, sig_name, REGRESS_METHOD, "regression", self.method_name_check)
                    outs = regress_outputs(sig)
                else:
                    raise _err(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
                plans.append((task, sig_name, outs))
            examples = serialized_examples(request.input)
            self.metrics.record_examples(first.name, len(examples))
            for task, sig_name, outs in plans:
                result = self._run(servable, "MultiInference", {"inputs": examples}, sig_name, outs, deadline)
                item = response.results.add()
                self._make_spec(item.model_spec, task.model_spec.name, sig_name, servable.version)
                if task.method_name == CLASSIFY_METHOD:
                    fill_classification(item.classification_result, result, len(examples))
                else:
                    fill_regression(item.regression_result, result, len(examples))
        return response

    # ---------------------------------------------------------------- metadata / status
    def get_model_metadata(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise _err(Code.INVALID_ARGUMENT, "Missing ModelSpec")
        if not len(request.metadata_field):
            raise _err(Code.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
        for name in request.metadata_field:
            if name != "signature_def":
                raise _err(Code.INVALID_ARGUMENT, f"Metadata field {name} is not supported")
        with self._acquire(request.model_spec) as servable:
            sdm = self.pb.SignatureDefMap()
            for name, sig in signature_defs(servable).items():
                sdm.signature_def[name].CopyFrom(sig)
            response = self.pb.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = int(servable.version)
            response.metadata["signature_def"].Pack(sdm)
            return response

    def signature_input_types(self, spec: Any) -> dict[str, int]:
        """REST's GetInfoMap: alias -> DataType of the requested signature's inputs."""
        with self._acquire(spec) as servable:
            sig_name = spec.signature_name or DEFAULT_SIGNATURE
            sig = signature_defs(servable).get(sig_name)
            if sig is None:
                raise _err(Code.INVALID_ARGUMENT, f'Serving signature name: "{sig_name}" not found in signature def')
            return {alias: info.dtype for alias, info in sig.inputs.items()}

    def get_model_status(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise _err(Code.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        try:
            statuses = list(self.manager.statuses(spec.name, version))
        except ServingError as exc:
            if exc.code != Code.NOT_FOUND:
                raise
            statuses = []
        if not statuses:
            if version is not None:
                raise _err(Code.NOT_FOUND, f"Could not find version {version} of model {spec.name}")
            raise _err(Code.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        response = self.pb.GetModelStatusResponse()
        states = self.pb.ModelVersionStatus.State
        for st in sorted(statuses, key=lambda s: int(s.version)):
            item = response.model_version_status.add()
            item.version = int(st.version)
            state = getattr(st.state, "name", str(st.state)).upper()
            item.state = states.Value(state) if state in states.keys() else states.Value("UNKNOWN")
            code = st.error_code
            item.status.error_code = int(getattr(code, "value", code) or 0)
            item.status.error_message = st.error_message or ""
        return response

    def reload_config(self, request: Any) -> Any:
        response = self.pb.ReloadConfigResponse()
        if request.config.WhichOneof("config") != "model_config_list":
            raise _err(Code.INVALID_ARGUMENT, "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                       "Only ModelConfigList is currently supported")
        if self._reload_config is None:
            raise _err(Code.UNIMPLEMENTED, "config reload is not available")
        for index, cfg in enumerate(request.config.model_config_list.config):
            logger.info("Config entry index: %d path: %s name: %s platform: %s",
                        index, cfg.base_path, cfg.name, cfg.model_platform)
        self._reload_config(request.config)
        return response
