"""The one error tree of edge: every error a user can cause or fix derives from :class:`EdgeError`.

Each error's message is one line naming what is wrong and, where there is one, the fix. Programs
map the tree to exit codes in one place (:func:`exit_code_for`): a usage or configuration mistake
exits 2, anything else that stops a program exits 1, and a restart the gateway asked for exits 75.

    EdgeError
    ├── UsageError                 bad command-line input
    ├── ConfigError                a config file or patch the user can fix
    │   ├── PatchError             a refused cmd/config patch (nothing changed)
    │   ├── ServerConfigError      edge-model-server flags/config files
    │   │   ├── FlagError, ModelConfigError, ProtoConfigError
    │   └── TrustError             a remote change to a trust anchor without a valid signature
    ├── SignedDocumentError        a signed document is malformed, badly signed or not for this device
    │   ├── DocumentExpired, DocumentReplayed
    ├── StartupError               the daemon cannot start (model missing, spool unwritable, ...)
    ├── ModelError                 what a model version is
    │   ├── ModelStoreError, ModelMetadataError, GoldenError
    │   └── ArtifactError          registry artifacts: UnsafeArtifact, SignatureError, KeyFileError
    ├── ServingError               running a model
    │   ├── ClassifierError        (LiteRTError, BackendUnavailable), SavedModelError
    │   ├── TensorConversionError, SnapshotError, ProtoCompileError
    ├── RolloutError               a rollout request cannot be carried out
    │   ├── ModelInstallError (StaleVersionError), CandidateLoadError
    ├── TransportError
    │   ├── RegistryError          (RegistryAuthError, RegistryNotFound, DigestMismatch)
    │   ├── SpoolError, CommandError, FleetError
    ├── DeviceError
    │   ├── StatusFileError        (StatusFileStale)
    │   └── DesiredStateError      a desired-state document refused (malformed, stale, not allowed)
    └── ProvisioningError          edgectl: InitError, CaError, BrokerConfigError, KeyGenError, ServiceInstallError,
                                   ProfileError (the operator's ~/.config/edgectl/config.toml)

Some classes also derive from the builtin the code historically raised (ValueError, RuntimeError),
so callers that catch those keep working.
"""
from __future__ import annotations

import logging
from enum import IntEnum
from typing import Any

logger = logging.getLogger(__name__)


class ExitCode(IntEnum):
    """Exit statuses of edge-gateway, edge-model-server and edgectl."""

    OK = 0
    FAILURE = 1  # could not start or could not finish (see the message)
    USAGE = 2  # bad arguments or configuration: systemd must not restart (RestartPreventExitStatus=2)
    RESTART = 75  # EX_TEMPFAIL: stopped on purpose, start me again (RestartForceExitStatus=75)


EXIT_STARTUP = int(ExitCode.FAILURE)
EXIT_CONFIG = int(ExitCode.USAGE)
EXIT_RESTART = int(ExitCode.RESTART)


class EdgeError(Exception):
    """Root of every error edge raises on purpose; the message is one line for the user."""


# -- usage and configuration ---------------------------------------------------------------------

class UsageError(EdgeError):
    """Bad command-line input (exit 2)."""


class ConfigError(EdgeError):
    """A configuration problem a user can fix; the message is a single line."""


class PatchError(ConfigError):
    """The patch is refused; nothing changed. The message is one line."""


class TrustError(PatchError):
    """A change to a trust anchor (keys, registry, broker, credentials, paths) arrived without a
    valid signature from the fleet root key; refused, nothing changed. `keys` names the anchors."""

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


class SignedDocumentError(EdgeError):
    """A signed document (DSSE envelope) is malformed, not signed by the fleet root key, not addressed
    to this device, or otherwise refused; nothing changed. The message names the field or the key."""


class DocumentExpired(SignedDocumentError):
    """The document's `expires` time has passed (or it claims to be issued in the future)."""


class DocumentReplayed(SignedDocumentError):
    """The document's counter is not above the highest counter this device already accepted."""


class ServerConfigError(ConfigError):
    """A config problem edge-model-server finds before serving (exit status 2)."""


class FlagError(ServerConfigError, ValueError):
    """A command-line flag is unknown, missing its value or has a bad value (one-line message)."""


class ModelConfigError(ServerConfigError, ValueError):
    """A model config file cannot be read or parsed; the message is one line naming file, line, column."""


class ProtoConfigError(ServerConfigError, ValueError):
    """A text-format config (model config, batching or monitoring file) does not parse.

    Besides the one-line message it keeps what TF Serving reports: the message type
    (``tensorflow.serving.ModelServerConfig``), the 1-based line and column, and the parser's detail."""

    def __init__(self, message: str, *, message_type: str = "", line: int | None = None,
                 column: int | None = None, detail: str = "", text: str = "") -> None:
        super().__init__(message)
        self.message_type = message_type
        self.line = line
        self.column = column
        self.detail = detail
        self.text = text


class StartupError(EdgeError):
    """The gateway cannot start (model missing, spool unwritable...); one line for the user."""


# -- models ---------------------------------------------------------------------------------------

class ModelError(EdgeError):
    """A model version on disk or in the registry is not what it must be."""


class ModelStoreError(ModelError):
    """The store does not hold what was asked for; the message says what to do."""


class ModelMetadataError(ModelError):
    """A version folder's edge.json or labels.txt is malformed."""


class GoldenError(ModelError):
    """Golden images or reference.json are missing, unreadable or malformed."""


class ArtifactError(ModelError):
    """An artifact or version folder is not what it must be; the message names the problem."""


class UnsafeArtifact(ArtifactError):
    """An archive would write outside its folder, holds links/devices, is too big or corrupt."""


class SignatureError(ArtifactError):
    """Missing, malformed or invalid signature."""


class KeyFileError(ArtifactError):
    """A key file is missing, unreadable, of the wrong type, or too open."""


# -- serving --------------------------------------------------------------------------------------

class ServingError(EdgeError):
    """A model cannot be loaded or run."""


class ClassifierError(ServingError):
    """A model cannot be used as an image classifier (the message says why)."""


class LiteRTError(ClassifierError):
    """A .tflite model cannot be loaded or run as an image classifier (message says why)."""


class BackendUnavailable(ClassifierError):
    """The serving backend cannot be reached or has no usable version right now."""


class SavedModelError(ServingError):
    """The SavedModel cannot be loaded or called as asked; the message names the problem."""


class TensorConversionError(ServingError, ValueError):
    """A TensorProto that cannot become an ndarray, or an array that cannot become a TensorProto."""


class SnapshotError(ServingError):
    """A snapshot cannot be rendered (the frame could not be encoded as JPEG)."""


class ProtoCompileError(ServingError, RuntimeError):
    """The vendored .proto files could not be compiled (protoc missing or a broken file)."""


# -- rollout --------------------------------------------------------------------------------------

class RolloutError(EdgeError):
    """A rollout request cannot be carried out (message for the operator)."""


class ModelInstallError(RolloutError):
    """An artifact cannot be installed; the message says why (one line)."""


class StaleVersionError(ModelInstallError):
    """A model version older than one this device already accepted, without a signed rollback naming it."""


class CandidateLoadError(RolloutError):
    """The candidate version cannot be loaded at all (message says why)."""


# -- transport ------------------------------------------------------------------------------------

class TransportError(EdgeError):
    """Talking to the registry, the broker or the spool failed."""


class RegistryError(TransportError):
    """The registry cannot be reached or refused a request; the message names registry and object."""


class RegistryAuthError(RegistryError):
    """401/403: missing or wrong credentials, or no permission."""


class RegistryNotFound(RegistryError):
    """404: repository, tag, manifest or blob unknown."""


class DigestMismatch(RegistryError):
    """Content does not hash to the digest it was fetched by."""


class SpoolError(TransportError, RuntimeError):
    """The spool could not be opened, read or written (disk full, read-only, I/O error)."""


class CommandError(TransportError):
    """A command cannot be carried out; the message is the one-line `error` of the response."""


class FleetError(TransportError):
    """An operation against the broker failed; the message is one line for the user."""


# -- device ---------------------------------------------------------------------------------------

class DeviceError(EdgeError):
    """Local device operations (status file, systemd) failed."""


class StatusFileError(DeviceError):
    """The status file is missing, unreadable or stale; the message is one line with the likely cause."""


class StatusFileStale(StatusFileError):
    """The file exists but the daemon stopped rewriting it."""

    def __init__(self, message: str, snapshot: dict[str, Any]) -> None:
        super().__init__(message)
        self.snapshot = snapshot


class DesiredStateError(DeviceError):
    """A desired-state document (``<prefix>/<device>/desired``) is refused: malformed, an unknown or
    wrongly typed field, a stale generation, or a change desired state may not make. One line; the
    device keeps what it runs."""


# -- provisioning (edgectl) -----------------------------------------------------------------------

class ProvisioningError(EdgeError):
    """An edgectl operation cannot proceed."""


class InitError(ProvisioningError):
    """Bad or missing input for init (exit 2)."""


class CaError(ProvisioningError):
    """Refused because of what was given (bad CSR, wrong folder, file exists); one line, exit 2."""


class BrokerConfigError(ProvisioningError, ValueError):
    """A bad argument for the generated broker settings; one line, exit 2."""


class KeyGenError(ProvisioningError):
    """The key files cannot be written where asked."""


class ServiceInstallError(ProvisioningError):
    """Install cannot proceed; one line (exit 1)."""


class ProfileError(ProvisioningError):
    """The operator's edgectl profile file or context is unusable (unknown context, bad key, readable
    by others while it holds a password); one line, exit 2."""


# what the user gave is wrong: arguments, config files, inputs to edgectl (key files, golden images)
_USAGE_ERRORS: tuple[type[EdgeError], ...] = (UsageError, ConfigError, InitError, CaError, BrokerConfigError,
                                              KeyGenError, KeyFileError, GoldenError, ProfileError)


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit status a program reports for `error`: USAGE for mistakes in what the user gave, else FAILURE."""
    if isinstance(error, _USAGE_ERRORS):
        return ExitCode.USAGE
    return ExitCode.FAILURE
