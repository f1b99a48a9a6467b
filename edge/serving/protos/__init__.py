"""TensorFlow Serving wire protocol (messages and method table) without importing TensorFlow.

The vendored .proto files in this folder (see README.md here) are compiled at run time into a
FileDescriptorSet (see `_compile.py`), loaded into a *private* DescriptorPool and turned into
message classes. Package names and field numbers are upstream's, so the bytes on the wire and
`google.protobuf.Any` type URLs are the same as with `tensorflow_serving.apis`, and the official
generated modules can live in the same process (they use the default pool; this one never does).

    from edge.serving.protos import messages, pb, RPCS
    pb = messages()                          # or use the lazy module-level `pb`
    req = pb.PredictRequest()
    req.model_spec.name = "half_plus_two"
    pb.DataType.Value("DT_FLOAT") == pb.DT_FLOAT == 1
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
)
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

from edge.errors import ProtoCompileError, ProtoConfigError
from edge.serving.protos._compile import load_descriptor_set

__all__ = [
    "MODEL_SERVICE",
    "PREDICTION_SERVICE",
    "RPCS",
    "ProtoCompileError",
    "ProtoConfigError",
    "ProtoMessages",
    "messages",
    "parse_text_config",
    "pb",
    "rpc_types",
]

logger = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"

# gRPC method path -> (service, request message, response message); message names are the short
# attribute names on ProtoMessages. Tests check this against the official service descriptors.
RPCS: dict[str, tuple[str, str, str]] = {
    f"/{PREDICTION_SERVICE}/Classify": (PREDICTION_SERVICE, "ClassificationRequest", "ClassificationResponse"),
    f"/{PREDICTION_SERVICE}/Regress": (PREDICTION_SERVICE, "RegressionRequest", "RegressionResponse"),
    f"/{PREDICTION_SERVICE}/Predict": (PREDICTION_SERVICE, "PredictRequest", "PredictResponse"),
    f"/{PREDICTION_SERVICE}/MultiInference": (PREDICTION_SERVICE, "MultiInferenceRequest", "MultiInferenceResponse"),
    f"/{PREDICTION_SERVICE}/GetModelMetadata": (PREDICTION_SERVICE, "GetModelMetadataRequest", "GetModelMetadataResponse"),
    f"/{MODEL_SERVICE}/GetModelStatus": (MODEL_SERVICE, "GetModelStatusRequest", "GetModelStatusResponse"),
    f"/{MODEL_SERVICE}/HandleReloadConfigRequest": (MODEL_SERVICE, "ReloadConfigRequest", "ReloadConfigResponse"),
}

# Nested messages that callers use often enough to deserve a short name of their own.
_NESTED_ALIASES = {
    "ServableVersionPolicy": "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy",
    "TensorShapeDim": "tensorflow.TensorShapeProto.Dim",
}



class ProtoMessages:
    """Message classes and enums of the vendored protos, by short name.

    Every top-level message of the vendored files is an attribute (`PredictRequest`, `TensorProto`,
    `Example`, `ModelServerConfig`, ...), plus `ServableVersionPolicy` and `TensorShapeDim`; nested
    types hang off their parent class as usual (`ModelVersionStatus.State`, `ModelVersionStatus.AVAILABLE`).
    Top-level enums are `EnumTypeWrapper`s (`DataType`, `Code`, `ModelType`) and their values are
    plain int attributes (`DT_FLOAT`, `NOT_FOUND`, ...), as in generated `_pb2` modules.
    """

    def __getattr__(self, name: str) -> Any:
        """Only reached for names the vendored protos do not define (the rest are set in __init__);
        declared so type checkers know the attributes are dynamic."""
        raise AttributeError(f"the vendored protos define no message or enum named {name!r}")

    def __init__(self, pool: descriptor_pool.DescriptorPool, files: list[FileDescriptor]) -> None:
        self.pool = pool
        self.files = {f.name: f for f in files}
        self.by_full_name: dict[str, type[Message]] = {}
        for fd in files:
            if fd.package.startswith("google.protobuf"):
                continue
            for desc in fd.message_types_by_name.values():
                self._add(desc.name, self.message_class(desc.full_name))
            for enum in fd.enum_types_by_name.values():
                self._add(enum.name, EnumTypeWrapper(enum))
                for value in enum.values:
                    self._add(value.name, value.number)
        for alias, full_name in _NESTED_ALIASES.items():
            self._add(alias, self.message_class(full_name))

    def _add(self, name: str, value: Any) -> None:
        if name in self.__dict__:
            raise ProtoCompileError(f"two vendored protos define the short name {name!r}")
        setattr(self, name, value)

    def message_class(self, full_name: str) -> type[Message]:
        """The class of a message by full name (e.g. 'tensorflow.serving.PredictRequest')."""
        cls = self.by_full_name.get(full_name)
        if cls is None:
            cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
            self.by_full_name[full_name] = cls
        return cls

    def get(self, name: str) -> type[Message]:
        """A message class by short name ('PredictRequest') or full name."""
        value = self.__dict__.get(name)
        if isinstance(value, type) and issubclass(value, Message):
            return value
        try:
            return self.message_class(name)
        except KeyError:
            raise KeyError(f"no TF Serving message named {name!r}") from None

    def enum(self, full_name: str) -> EnumTypeWrapper:
        return EnumTypeWrapper(self.pool.FindEnumTypeByName(full_name))

    def descriptor(self, full_name: str) -> Descriptor:
        return self.pool.FindMessageTypeByName(full_name)

    def enum_descriptor(self, full_name: str) -> EnumDescriptor:
        return self.pool.FindEnumTypeByName(full_name)


_lock = threading.Lock()
_messages: ProtoMessages | None = None


def _build(data: bytes) -> ProtoMessages:
    fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    pool = descriptor_pool.DescriptorPool()  # private: never the default pool
    for file_proto in fds.file:  # protoc emits dependencies first
        pool.AddSerializedFile(file_proto.SerializeToString())
    files = [pool.FindFileByName(f.name) for f in fds.file]
    return ProtoMessages(pool, files)


def messages() -> ProtoMessages:
    """The message classes, compiled (or read from the cache) on the first call."""
    global _messages
    if _messages is None:
        with _lock:
            if _messages is None:
                try:
                    built = _build(load_descriptor_set())
                except ProtoCompileError:
                    raise
                except Exception as exc:  # an unreadable cache entry: compile afresh
                    logger.warning("TF Serving descriptor cache unusable (%s); recompiling", exc)
                    built = _build(load_descriptor_set(use_cache=False))
                _messages = built
    return _messages


class _LazyMessages:
    """`pb.PredictRequest` without an explicit `messages()` call; compiles on first use."""

    def __getattr__(self, name: str) -> Any:
        return getattr(messages(), name)

    def __dir__(self) -> list[str]:
        return dir(messages())


pb: ProtoMessages = _LazyMessages()  # type: ignore[assignment]


def rpc_types(method_path: str) -> tuple[type[Message], type[Message]]:
    """Request and response classes of a gRPC method path from RPCS."""
    try:
        _, request, response = RPCS[method_path]
    except KeyError:
        raise KeyError(f"unknown TF Serving method {method_path!r}") from None
    m = messages()
    return m.get(request), m.get(response)


def parse_text_config(text: str, message_name: str, source: str | None = None) -> Message:
    """Parse a protobuf text-format config into `message_name` (short or full name).

    Raises ProtoConfigError with one line: where (source, line, column) and what is wrong.
    """
    cls = messages().get(message_name)
    msg = cls()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        where = source or "config"
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        prefix = f"{line}:{column} : "
        if detail.startswith(prefix):
            detail = detail[len(prefix):]
        detail = " ".join(detail.split())
        if line is not None:
            where = f"{where}: line {line}, column {column}"
        raise ProtoConfigError(f"{where}: not a valid {cls.DESCRIPTOR.name} text proto: {detail}",
                               message_type=cls.DESCRIPTOR.full_name, line=line, column=column, detail=detail,
                               text=text) from None
    return msg


def __getattr__(name: str) -> Any:
    # Module-level enum values and classes, e.g. `from edge.serving.protos import DT_FLOAT`.
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return getattr(messages(), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
