"""What every config section shares: strict frozen models, names used in topics, text without control characters."""
from __future__ import annotations

import logging
import re

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def no_control(value: str | None) -> str | None:
    if value is not None and CONTROL_RE.search(value):
        raise ValueError("must not contain control characters (newline, tab, NUL...)")
    return value


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (it is used in MQTT topics)"
        )
    return value
