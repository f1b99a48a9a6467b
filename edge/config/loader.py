"""Reading the gateway's TOML file and validating it against :mod:`edge.config.schema`.

Every user mistake becomes a :class:`~edge.errors.ConfigError` whose message is one line naming
the key (``cameras[1].fps``) and what is wrong with it; programs print it and exit with status 2.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.config.schema import CONTROL_RE, GatewayConfig
from edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

logger = logging.getLogger(__name__)

MAX_DEPTH = 32  # the schema is at most 4 levels deep; anything far deeper is refused before validation
MAX_MESSAGE_CHARS = 400


def _format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-after", "function-before", "union", "literal", "tuple")):
            continue  # pydantic's internal validator steps are not keys the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Control characters escaped (a message is one line), and long values shortened."""
    text = CONTROL_RE.sub(lambda m: repr(m.group(0))[1:-1], text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _too_deep(data: Any) -> str | None:
    """The key path where `data` nests deeper than MAX_DEPTH, or None (iterative: no recursion)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        node, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            return _format_location(loc[:4]) + "..."
        if isinstance(node, dict):
            stack.extend((v, (*loc, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(node))
    return None


def _format_error(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    loc = _format_location(tuple(first["loc"]))
    kind = first["type"]
    msg = str(first["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        msg = "unknown key (check the spelling; docs/configuration.md lists the accepted keys)"
    elif kind == "missing":
        msg = "is required but missing"
    elif "input" in first and kind.endswith("_type"):
        msg = f"{msg}, got {type(first['input']).__name__} {_one_line(repr(first['input']), 100)}"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{_one_line(loc, 200)}: {_one_line(msg)}{suffix}"


def parse_config(data: dict[str, Any], source: str = "<config>") -> GatewayConfig:
    """Validate an already-parsed TOML document."""
    where = _too_deep(data)
    if where is not None:
        raise ConfigError(f"{source}: {_one_line(where, 200)}: nested more than {MAX_DEPTH} levels deep; "
                          "no key of the config nests like that")
    try:
        # JSON mode: strict types (no "5" for 5) while TOML arrays map onto tuples and strings onto paths.
        return GatewayConfig.model_validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format_error(exc)}") from None


def load_config(path: Path | str) -> GatewayConfig:
    """Read and validate a TOML config file; raises ConfigError with one clear line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (pass --config FILE)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {_one_line(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{path}: TOML syntax error: arrays or inline tables nested too deeply") from None
    return parse_config(data, str(path))
