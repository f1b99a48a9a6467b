"""Operator profiles: named contexts in ``~/.config/edgectl/config.toml``, ``--context``, ``EDGE_*``.

So a fleet command is one short line (``edgectl fleet ls``) instead of five TLS flags::

    current_context = "prod"

    [contexts.prod]
    broker = "mqtts://broker.example:8883"
    ca_file = "~/fleet/ca.crt"          # relative paths are relative to this file's folder
    cert = "~/fleet/op.crt"
    key = "~/fleet/op.key"
    registry_ca_file = "~/fleet/registry-ca.crt"

    [contexts.lab]
    broker = "mqtt://127.0.0.1:1883"
    registry_insecure = true

Each setting comes from, first to last: the command-line flag, its ``EDGE_*`` variable
(:data:`SETTINGS`), the context (``--context NAME``, else ``EDGE_CONTEXT``, else
``current_context``), the built-in default. The file is ``$XDG_CONFIG_HOME/edgectl/config.toml``
(``~/.config/…``), or ``EDGECTL_CONFIG``. A file that holds a password must not be readable by
others (``chmod 600``), as ssh insists for its keys. ``edgectl context ls|show|use`` lists, shows
and switches contexts.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    env: str
    kind: type  # str, bool or Path
    default: Any = None
    secret: bool = False


SETTINGS: dict[str, Setting] = {
    "broker": Setting("EDGE_BROKER", str, "mqtt://127.0.0.1:1883"),
    "prefix": Setting("EDGE_PREFIX", str, "edge"),
    "username": Setting("EDGE_USERNAME", str),
    "password": Setting("EDGE_PASSWORD", str, secret=True),
    "ca_file": Setting("EDGE_CA_FILE", Path),
    "cert": Setting("EDGE_CERT", Path),
    "key": Setting("EDGE_KEY", Path),
    "registry_username": Setting("EDGE_REGISTRY_USERNAME", str),
    "registry_password": Setting("EDGE_REGISTRY_PASSWORD", str, secret=True),
    "registry_insecure": Setting("EDGE_REGISTRY_INSECURE", bool, False),
    "registry_ca_file": Setting("EDGE_REGISTRY_CA_FILE", Path),
    "database": Setting("EDGE_DATABASE", str, secret=True),  # `fleet export`: a PostgreSQL conninfo or URL
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


REGISTRY_SETTINGS = ("registry_username", "registry_password", "registry_insecure", "registry_ca_file")


def config_path() -> Path:
    if os.environ.get("EDGECTL_CONFIG"):
        return Path(os.environ["EDGECTL_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgectl" / "config.toml"


@dataclass(frozen=True)
class Profiles:
    path: Path
    current: str | None
    contexts: dict[str, dict[str, Any]]

    def context(self, name: str | None) -> tuple[str | None, dict[str, Any]]:
        """(the context's name, its settings) for `name`, else EDGE_CONTEXT, else current_context."""
        chosen = name or os.environ.get("EDGE_CONTEXT") or self.current
        if chosen is None:
            return None, {}
        if chosen not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise ProfileError(f"context {chosen!r} is not in {self.path} (contexts: {known})")
        return chosen, self.contexts[chosen]


def _value(name: str, raw: Any, where: str, base: Path) -> Any:
    kind = SETTINGS[name].kind
    if kind is bool:
        if not isinstance(raw, bool):
            raise ProfileError(f"{where}.{name}: must be true or false, got {raw!r}")
        return raw
    if not isinstance(raw, str) or not raw:
        raise ProfileError(f"{where}.{name}: must be a non-empty string, got {raw!r}")
    if kind is Path:
        path = Path(raw).expanduser()
        return path if path.is_absolute() else base / path
    return raw


def load(path: Path | None = None) -> Profiles:
    """The profile file (an empty one when it does not exist); ProfileError naming the key otherwise."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Profiles(path, None, {})
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read it: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"current_context", "contexts"})
    if unknown:
        raise ProfileError(f"{path}: unknown key(s) {unknown} (accepted: current_context, [contexts.NAME])")
    current = doc.get("current_context")
    if current is not None and not isinstance(current, str):
        raise ProfileError(f"{path}: current_context must be a string")
    contexts: dict[str, dict[str, Any]] = {}
    raw_contexts = doc.get("contexts", {})
    if not isinstance(raw_contexts, dict):
        raise ProfileError(f"{path}: contexts must be tables ([contexts.NAME])")
    secrets = False
    for name, table in raw_contexts.items():
        where = f"contexts.{name}"
        if not _NAME_RE.match(name) or not isinstance(table, dict):
            raise ProfileError(f"{path}: [{where}] must be a table named with letters, digits, '_', '-', '.'")
        bad = sorted(set(table) - set(SETTINGS))
        if bad:
            raise ProfileError(f"{path}: {where}: unknown key(s) {bad} (accepted: {', '.join(SETTINGS)})")
        contexts[name] = {k: _value(k, v, where, path.parent) for k, v in table.items()}
        secrets = secrets or any(SETTINGS[k].secret for k in table)
    if current is not None and current not in contexts:
        raise ProfileError(f"{path}: current_context {current!r} names no [contexts.{current}] table")
    if secrets:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ProfileError(f"{path} holds a password and is readable by others (mode {mode:04o}); "
                               f"run `chmod 600 {path}`")
    return Profiles(path, current, contexts)


def _env(name: str) -> Any:
    setting = SETTINGS[name]
    raw = os.environ.get(setting.env)
    if raw is None:
        return None
    if setting.kind is bool:
        if raw.strip().lower() not in _TRUE | _FALSE:
            raise ProfileError(f"{setting.env}={raw!r}: must be true or false")
        return raw.strip().lower() in _TRUE
    if setting.kind is Path:
        return Path(raw).expanduser() if raw else None
    return raw or None


def resolve(args: argparse.Namespace, names: tuple[str, ...] | None = None) -> argparse.Namespace:
    """Fill the settings `args` leaves unset (None) from EDGE_*, the context, the defaults; returns `args`."""
    wanted = [n for n in (names or tuple(SETTINGS)) if hasattr(args, n)]
    if all(getattr(args, n) is not None for n in wanted):
        return args
    chosen = getattr(args, "context", None) or getattr(args, "global_context", None)
    _, context = load().context(chosen)
    for name in wanted:
        if getattr(args, name) is not None:
            continue
        value = _env(name)
        if value is None:
            value = context.get(name, SETTINGS[name].default)
        setattr(args, name, value)
    return args


# -- edgectl context ls|show|use -----------------------------------------------------------------------

def cmd_ls(args: argparse.Namespace) -> int:
    profiles = load()
    active, _ = profiles.context(getattr(args, "global_context", None)) if profiles.contexts else (None, {})
    if not profiles.contexts:
        print(f"no contexts in {profiles.path}")
        return 0
    for name, settings in sorted(profiles.contexts.items()):
        print(f"{'*' if name == active else ' '} {name:<20} {settings.get('broker', SETTINGS['broker'].default)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    profiles = load()
    name, context = profiles.context(args.name or getattr(args, "global_context", None))
    print(f"# {profiles.path}, context {name or '(none)'}; * = from the environment")
    for key, setting in SETTINGS.items():
        env = _env(key)
        value = env if env is not None else context.get(key, setting.default)
        shown = "(set)" if setting.secret and value is not None else value
        print(f"{key} = {shown}{' *' if env is not None else ''}")
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    profiles = load()
    if args.name not in profiles.contexts:
        raise ProfileError(f"context {args.name!r} is not in {profiles.path} "
                           f"(contexts: {', '.join(sorted(profiles.contexts)) or 'none'})")
    text = profiles.path.read_text(encoding="utf-8")
    line = f'current_context = "{args.name}"'
    pattern = re.compile(r'^current_context\s*=.*$', re.MULTILINE)
    text = pattern.sub(line, text, count=1) if pattern.search(text) else f"{line}\n{text}"
    tomllib.loads(text)  # never write a file that does not read back
    mode = stat.S_IMODE(profiles.path.stat().st_mode)
    tmp = profiles.path.with_name(profiles.path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(profiles.path)
    print(f"current context: {args.name}")
    return 0
