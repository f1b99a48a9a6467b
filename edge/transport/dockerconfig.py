"""Registry credentials the way docker, podman and oras find them: ``config.json`` and credential helpers.

The file is ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (or a path given)::

    {"auths": {"registry.example:5000": {"auth": "<base64 user:password>"},
               "reg2.example": {"identitytoken": "<OAuth2 refresh token>"}},
     "credHelpers": {"123456789.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"},
     "credsStore": "secretservice"}

For a registry ``host[:port]`` the docker CLI's order applies: ``credHelpers[host]``, else
``credsStore``, else ``auths`` (the exact key, then any key whose host part matches, such as
``https://host:5000/v1/``). A helper is the program ``docker-credential-<name>`` on ``PATH``, run
as ``docker-credential-<name> get`` with the registry on stdin; it answers
``{"ServerURL": ..., "Username": ..., "Secret": ...}``, or exits non-zero with "credentials not
found" (anonymous then). The user name ``<token>`` means ``Secret`` is an identity token (an OAuth2
refresh token for the registry's token server).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import RegistryAuthError

logger = logging.getLogger(__name__)

HELPER_TIMEOUT_S = 30.0
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # OAuth2 refresh token (Bearer registries only)
    source: str = ""  # where they came from, for messages (never the secret)


def default_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def _hostname(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000`` (docker's ConvertToHostname)."""
    for scheme in ("http://", "https://"):
        if key.startswith(scheme):
            key = key[len(scheme):]
    return key.split("/", 1)[0]


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RegistryAuthError(f"docker config {path}: cannot read it: {exc.strerror}") from None
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryAuthError(f"docker config {path}: not valid JSON ({exc})") from None
    if len(data) > MAX_CONFIG_BYTES or not isinstance(doc, dict):
        raise RegistryAuthError(f"docker config {path}: not a JSON object of at most 1 MiB")
    return doc


def run_helper(name: str, registry: str) -> Credentials | None:
    """``docker-credential-<name> get`` for `registry`; None when it has nothing for it."""
    program = f"docker-credential-{name}"
    try:
        done = subprocess.run([program, "get"], input=registry.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise RegistryAuthError(f"credential helper {program} (docker config) is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise RegistryAuthError(f"credential helper {program} did not answer within {HELPER_TIMEOUT_S:g}s") from None
    if done.returncode != 0:
        message = (done.stdout or done.stderr).decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            return None
        raise RegistryAuthError(f"credential helper {program} failed for {registry} (exit {done.returncode}): "
                                f"{message.splitlines()[0][:200] if message else 'no message'}")
    try:
        doc = json.loads(done.stdout)
        username, secret = doc.get("Username"), doc.get("Secret")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise RegistryAuthError(f"credential helper {program} answered something that is not its JSON") from None
    if not isinstance(secret, str) or not secret:
        return None
    source = f"credential helper {program}"
    if username == "<token>":
        return Credentials(identity_token=secret, source=source)
    return Credentials(username=str(username or ""), password=secret, source=source)


def _from_auths(auths: Any, registry: str, path: Path) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    entry = auths.get(registry)
    if entry is None:
        entry = next((value for key, value in auths.items() if _hostname(str(key)) == registry), None)
    if not isinstance(entry, dict):
        return None
    source = f"docker config {path}"
    if entry.get("identitytoken"):
        return Credentials(identity_token=str(entry["identitytoken"]), source=source)
    if entry.get("auth"):
        try:
            username, sep, password = base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            raise RegistryAuthError(f"{source}: auths[{registry!r}].auth is not base64 of user:password") from None
        if not sep:
            raise RegistryAuthError(f"{source}: auths[{registry!r}].auth is not base64 of user:password")
        return Credentials(username=username, password=password, source=source)
    if entry.get("username"):
        return Credentials(username=str(entry["username"]), password=str(entry.get("password") or ""), source=source)
    return None


def lookup(registry: str, path: Path | None = None) -> Credentials | None:
    """Credentials for `registry` (``host[:port]``) from the docker config, or None (anonymous)."""
    path = Path(path) if path is not None else default_path()
    doc = _read(path)
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict) and isinstance(helpers.get(registry), str):
        return run_helper(helpers[registry], registry)
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        found = run_helper(store, registry)
        if found is not None:
            return found
    return _from_auths(doc.get("auths"), registry, path)
