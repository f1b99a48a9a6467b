"""Terminal output shared by edgectl's commands (rich markup)."""
from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

STATE_STYLE = {"ok": "green", "online": "green", "connected": "green", "degraded": "yellow",
               "connecting": "yellow", "offline": "red", "disconnected": "red", "stale": "red"}


def styled(value: Any) -> str:
    """`value` as text, coloured by what it says (ok/online green, degraded yellow, offline red)."""
    text = "-" if value is None else str(value)
    style = STATE_STYLE.get(text)
    return f"[{style}]{text}[/{style}]" if style else text
