"""Home Assistant's side of MQTT discovery for tests: `render(template, payload)` renders a discovery
template with Jinja2 the way Home Assistant's MQTT integration does (`value` is the payload,
`value_json` the payload parsed when it is JSON)."""
from __future__ import annotations

import json
from typing import Any

import jinja2


def render(template: str, payload: str) -> str:
    try:
        value_json: Any = json.loads(payload)
    except ValueError:
        value_json = None
    return jinja2.Environment().from_string(template).render(value=payload, value_json=value_json).strip()
