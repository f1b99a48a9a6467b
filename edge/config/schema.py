"""The gateway's configuration schema: one TOML file, validated strictly.

The schema is declared with pydantic (strict types, unknown keys refused); :mod:`edge.config.loader`
reads the file and turns validation errors into one-line :class:`~edge.errors.ConfigError` messages.
The wiring (:mod:`edge.app.wiring`) derives each part's own frozen settings object from the
sections here (``camera.CaptureSettings``, ``edge.transport.mqtt.MqttSettings``), so those
packages never see TOML.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from edge.config.cameras import CameraConfig, GateConfig, RoiConfig
from edge.config.console import ConsoleConfig
from edge.config.fields import CONTROL_RE
from edge.config.fields import NAME_RE as _NAME_RE
from edge.config.fields import Strict as _Strict
from edge.config.fields import check_name as _check_name
from edge.config.fields import no_control as _no_control
from edge.config.fleet import RESERVED_DEVICE_IDS, FleetConfig, HomeAssistantConfig
from edge.util.ociref import Reference
from edge.util.platforms import parse_platform

logger = logging.getLogger(__name__)

# re-exported: the loader and edgectl import these from here
__all__ = ["CONTROL_RE", "_NAME_RE", "CameraConfig", "GateConfig", "GatewayConfig", "RoiConfig"]

_TOPIC_RE = re.compile(r"^[^#+\s]+(/[^#+\s]+)*$")
MAX_PATH_CHARS = 4096


def _check_file(path: Path | None, key: str) -> None:
    """A configured file must exist and be a regular file; any OS error becomes a clear ValueError."""
    if path is None:
        return
    try:
        ok = path.is_file()
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{key} {str(path)[:200]!r} is not a readable file")


def _check_path(path: Path | None) -> Path | None:
    text = str(path) if path is not None else ""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    if len(text) > MAX_PATH_CHARS:
        raise ValueError(f"path is {len(text)} characters long; at most {MAX_PATH_CHARS}")
    return path


class PreprocessConfig(_Strict):
    color: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["stretch"] = "stretch"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @field_validator("std")
    @classmethod
    def _std(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v


class ModelConfig(_Strict):
    name: str
    store: Path = Path("/var/lib/edge/models")
    version: Literal["latest"] | int = "latest"
    top_k: int = Field(default=5, ge=1, le=100)
    preprocess: PreprocessConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "model name")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | int) -> str | int:
        if isinstance(v, int) and not 0 <= v < 2**63:
            raise ValueError("must be 'latest' or a version number between 0 and 2**63-1")
        return v

    _store = field_validator("store")(classmethod(lambda cls, v: _check_path(v)))


class ServingConfig(_Strict):
    backend: Literal["embedded", "tfserving"] = "embedded"
    max_batch_size: int = Field(default=8, ge=1, le=256)
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    threads: int = Field(default=0, ge=0, le=256, description="runtime threads (LiteRT: per interpreter), 0 = auto")
    # embedded LiteRT: interpreters side by side, one inference thread each; 0 = one per core, at most 4
    interpreters: int = Field(default=0, ge=0, le=64)
    # embedded backend: which runtime runs the model; "auto" converts to LiteRT and OpenVINO (and int8 where the
    # version allows it), verifies and times them
    runtime: Literal["auto", "tensorflow", "litert", "openvino"] = "auto"
    # "fp32" never tries reduced-precision (int8) candidates, even when the version declares a rule for them
    precision: Literal["auto", "fp32"] = "auto"
    # tfserving backend: where TF Serving (or edge-model-server) listens, and how to talk to it
    target: str = "127.0.0.1:8500"
    timeout_ms: float = Field(default=5000.0, gt=0, le=600_000)
    send: Literal["auto", "uint8", "float32", "jpeg"] = "auto"
    jpeg_quality: int = Field(default=90, ge=10, le=100)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if v.startswith("unix:"):
            if not v[5:].startswith("/"):
                raise ValueError(f"unix socket target must be unix:/absolute/path, got {v!r}")
            return v
        m = re.match(r"^([A-Za-z0-9_.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$", v)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ValueError(f"must be host:port or unix:/path/to/socket, got {v!r}")
        return v


class MqttConfig(_Strict):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "edge"
    keepalive_s: int = Field(default=30, ge=2, le=65535)
    # a password over plain mqtt:// can be read by anyone on the path; refused unless this is set
    allow_plaintext_password: bool = False

    _paths = field_validator("ca_file", "cert_file", "key_file")(classmethod(lambda cls, v: _check_path(v)))
    _text = field_validator("client_id", "username")(classmethod(lambda cls, v: _no_control(v)))

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        m = re.match(r"^(mqtts?)://([^/:\s]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?/?$", v)
        if not m:
            raise ValueError(f"must look like mqtt://host[:port] or mqtts://host[:port], got {v!r}")
        if m.group(3) and not 0 < int(m.group(3)) < 65536:
            raise ValueError(f"port must be 1-65535, got {m.group(3)}")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _TOPIC_RE.match(v):
            raise ValueError(f"must be topic levels without '#', '+', spaces or empty levels, got {v!r}")
        return v

    @model_validator(mode="after")
    def _tls_pairs(self) -> MqttConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        for key in ("ca_file", "cert_file", "key_file"):
            _check_file(getattr(self, key), key)
        if self.key_file is not None:
            mode = stat.S_IMODE(os.stat(self.key_file).st_mode)
            if mode & 0o027:
                raise ValueError(f"key_file {str(self.key_file)!r} is readable or writable by others "
                                 f"(mode {mode:04o}); run `chmod 600 {self.key_file}`")
        if (self.username is None) != (self.password is None) and self.password is not None:
            raise ValueError("password given without username")
        if self.password is not None and self.url.startswith("mqtt://") and not self.allow_plaintext_password:
            raise ValueError("a password over mqtt:// travels in plain text; use mqtts:// (TLS), "
                             "or set mqtt.allow_plaintext_password = true to accept the risk")
        return self


class SpoolConfig(_Strict):
    path: Path = Path("/var/lib/edge/spool.db")
    max_mb: float = Field(default=256.0, gt=0, le=1_000_000)
    sync: Literal["full", "normal"] = "full"

    _path = field_validator("path")(classmethod(lambda cls, v: _check_path(v)))


class HealthConfig(_Strict):
    interval_s: float = Field(default=15.0, ge=0.5, le=86_400)
    # the health snapshot is also written here for `edgectl status` (RuntimeDirectory=edge)
    status_file: Path | None = Path("/run/edge/status.json")

    _path = field_validator("status_file")(classmethod(lambda cls, v: _check_path(v)))


class ResultsConfig(_Strict):
    publish: Literal["always", "on_change"] = "always"
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)


class RegistryConfig(_Strict):
    """Where this device's model comes from: an OCI registry tag, watched with cheap HEAD requests.

    `ref` names the model repository and a tag (a version number or a channel such as `stable`);
    the gateway installs whatever digest the tag points to, after verifying it. `insecure = true`
    talks plain HTTP (loopback and labs only). With `public_key` set (EC P-256: OpenSSF model-signing;
    ed25519: the deprecated 0.2 format), unsigned or badly signed artifacts are refused. `platform` and
    `accelerators` choose among the variants of a multi-platform version.
    """

    ref: str
    poll_interval_s: float = Field(default=300.0, ge=1.0, le=86_400)
    username: str | None = None
    password: str | None = None
    insecure: bool = False
    ca_file: Path | None = None
    public_key: Path | None = None
    max_mb: float = Field(default=2048.0, gt=0, le=1_000_000)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    docker_config: Path | None = None  # a docker config.json (auths, credential helpers) when username is unset
    platform: str | None = None  # os/arch[/variant] picked from multi-platform versions; default: this machine
    accelerators: list[str] | None = None  # accelerator variants this device serves, preferred first; default: auto

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        try:
            Reference.parse(v)
        except Exception as exc:  # the parser's own message names the accepted form
            raise ValueError(str(exc)) from None
        return v

    @field_validator("platform")
    @classmethod
    def _platform(cls, v: str | None) -> str | None:
        return None if v is None else str(parse_platform(v))

    @field_validator("accelerators")
    @classmethod
    def _accelerators(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,31}", name):
                raise ValueError(f"accelerator {name[:40]!r}: lowercase letters, digits, '_', '.', '-' (e.g. cuda, litert)")
        return v

    @model_validator(mode="after")
    def _files(self) -> RegistryConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        for key in ("ca_file", "public_key", "docker_config"):
            _check_file(getattr(self, key), key)
        if self.insecure and self.ca_file is not None:
            raise ValueError("ca_file makes no sense with insecure = true (plain HTTP)")
        return self


class RolloutConfig(_Strict):
    """How a downloaded version earns its place: golden-image checks, then a probation period."""

    keep_versions: int = Field(default=3, ge=2, le=100, description="version folders kept on disk")
    tolerance: float = Field(default=1e-3, ge=0, le=1.0, description="max |score - reference| on golden images")
    latency_factor: float = Field(default=2.0, gt=0, le=1000, description="candidate / current median latency")
    require_golden: bool = True
    probation_s: float = Field(default=60.0, ge=0, le=86_400)
    probation_max_error_rate: float = Field(default=0.05, ge=0, le=1.0)
    probation_latency_factor: float = Field(default=2.0, gt=0, le=1000)


class TrustConfig(_Strict):
    """The fleet root of trust, provisioned out of band (`edgectl trust init`, `edgectl init --trust-root`).

    Without `root_key` no signed document is accepted: trust anchors (:mod:`edge.config.trust_keys`)
    can then only be changed locally. `state_file` (root version, highest counter accepted) defaults
    to ``<model.store>/../trust-state.json``, beside the model store (``StateDirectory``)."""

    root_key: Path | None = None  # ed25519 public key (PEM) of the fleet root
    state_file: Path | None = None

    _paths = field_validator("root_key", "state_file")(classmethod(lambda cls, v: _check_path(v)))

    @model_validator(mode="after")
    def _files(self) -> TrustConfig:
        _check_file(self.root_key, "root_key")
        return self


class GatewayConfig(_Strict):
    device_id: str
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cameras: list[CameraConfig] = Field(min_length=1)
    model: ModelConfig
    serving: ServingConfig = ServingConfig()
    mqtt: MqttConfig = MqttConfig()
    spool: SpoolConfig = SpoolConfig()
    health: HealthConfig = HealthConfig()
    results: ResultsConfig = ResultsConfig()
    registry: RegistryConfig | None = None
    rollout: RolloutConfig = RolloutConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    trust: TrustConfig = TrustConfig()
    console: ConsoleConfig = ConsoleConfig()
    fleet: FleetConfig = FleetConfig()

    @field_validator("device_id")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in RESERVED_DEVICE_IDS:
            raise ValueError(f"device_id {v!r} is reserved (<prefix>/{v}/ holds the fleet's rollout documents)")
        return _check_name(v, "device_id")

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate camera name(s) {dupes}; each camera needs its own name")
        return v

    @property
    def trust_state_file(self) -> Path:
        """Where the trust state lives: `trust.state_file`, else beside the model store."""
        return self.trust.state_file or self.model.store.parent / "trust-state.json"

    @model_validator(mode="after")
    def _registry_pins(self) -> GatewayConfig:
        if self.registry is not None and self.model.version != "latest":
            raise ValueError("model.version must be \"latest\" when [registry] is configured "
                             "(the registry tag decides the version; pin it there)")
        return self


