"""The docs name everything a user can meet: config keys, MQTT topics, status payloads, events and
model states that exist in the code must be in docs/ (a new one without docs fails here)."""
from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

from pydantic import BaseModel

from edge.config.schema import GatewayConfig
from edge.models.state import RolloutState
from edge.transport.mqtt import Availability

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EMITTERS = {"emit", "_emit", "publish_event", "_event"}  # callables whose first argument is an event name


def _submodel(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        for inner in (candidate, *typing.get_args(candidate)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def schema_keys(model: type[BaseModel] = GatewayConfig, section: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        sub = _submodel(field.annotation)
        if sub is not None:
            keys |= schema_keys(sub, f"{section}{name}.")
        else:
            keys.add(f"{section}{name}")
    return keys


def documented_keys() -> set[str]:
    """`| \\`key\\` |` table rows under `## [section]` / `## [[section]]` / `## top level` headings."""
    keys: set[str] = set()
    section = ""
    for line in (DOCS / "configuration.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^##+ (?:`)?\[\[?([a-z_.]+)\]\]?(?:`)?", line)
        if heading:
            section = heading.group(1) + "."
        elif re.match(r"^##+ top level", line):
            section = ""
        row = re.match(r"^\| `([a-z_]+)` \|", line)
        if row:
            keys.add(section + row.group(1))
    return keys


def test_every_config_key_is_documented() -> None:
    missing = sorted(schema_keys() - documented_keys())
    assert not missing, f"config keys missing from docs/configuration.md: {missing}"
    unknown = sorted(documented_keys() - schema_keys())
    assert not unknown, f"docs/configuration.md documents keys the schema does not have: {unknown}"


def _source_files() -> list[Path]:
    return sorted(p for folder in ("edge", "camera") for p in (ROOT / folder).rglob("*.py")
                  if "protos" not in p.parts)


def events_in_code() -> set[str]:
    """Event names: string literals passed first to emit()/publish_event(), or first in a `(name, payload)`
    notice the outbox collects (broker_*)."""
    names: set[str] = set()
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if called in EMITTERS and isinstance(node.args[0].value, str):
                    names.add(node.args[0].value)
            if isinstance(node, ast.Tuple) and len(node.elts) == 2 and isinstance(node.elts[0], ast.Constant):
                value = node.elts[0].value
                if isinstance(value, str) and re.fullmatch(r"broker_[a-z_]+", value):
                    names.add(value)
    return names


def topics_in_code() -> set[str]:
    """First levels below <prefix>/<device>/ the code publishes or subscribes to."""
    levels: set[str] = set()
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                    and node.func.attr in ("topic", "topic_filter", "publish_retained") \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                levels.add(node.args[0].value)
    return levels


def mqtt_doc() -> str:
    return (DOCS / "mqtt-api.md").read_text(encoding="utf-8")


def test_every_event_is_documented() -> None:
    events = events_in_code()
    assert {"gateway_started", "camera_online", "broker_disconnected", "model_switched"} <= events  # the scan works
    doc = mqtt_doc()
    missing = sorted(e for e in events if f"`{e}`" not in doc)
    assert not missing, f"events missing from docs/mqtt-api.md: {missing}"


def test_every_topic_is_documented() -> None:
    topics = topics_in_code()
    assert {"status", "health", "events", "results", "model", "cmd"} <= topics
    doc = mqtt_doc()
    missing = sorted(t for t in topics if not re.search(rf"\| `{re.escape(t)}[`/]", doc))
    assert not missing, f"topics missing from the table in docs/mqtt-api.md: {missing}"


def test_every_status_payload_and_model_state_is_documented() -> None:
    doc = mqtt_doc()
    missing = [f"status {a.value}" for a in Availability if f"`{a.value}`" not in doc]
    missing += [f"model state {s.value}" for s in RolloutState
                if f"`{s.value}`" not in doc and f"`{s.value}`" not in (DOCS / "model-lifecycle.md").read_text()]
    assert not missing, f"missing from docs/mqtt-api.md / docs/model-lifecycle.md: {missing}"
