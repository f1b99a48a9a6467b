"""Fleet commands over MQTT 5 request/response: `<prefix>/<device>/cmd/<command>`, QoS 1.

A command is JSON. When the request carries a Response Topic the reply goes there with the same
Correlation Data: ``{"ok": true, "command": "deploy", "result": {...}}`` or
``{"ok": false, "command": "deploy", "error": "..."}``. Malformed JSON, a wrong type, an unknown
key, an unknown command or a payload above 64 KiB is answered with an error and changes nothing.
A request without a Response Topic is still carried out; its outcome is logged.

The router holds one subscription, ``<prefix>/<device>/cmd/+``, and dispatches on the last topic
level, so a command nobody registered gets an ``unknown command`` reply instead of silence. Retained messages on
command topics are ignored (a stale retained `deploy` must not fire on every reconnect).

Handlers run one at a time on the router's own worker thread (never on paho's network thread),
behind a small bounded queue; a full queue is answered `busy`. Adding a command is one
:meth:`CommandRouter.register` call with its handler, the payload keys it accepts and its
:class:`Sensitivity`, which every registration must state:

- ``read-only``: reports, changes nothing (``ping``, ``snapshot``);
- ``operational``: changes how the device runs within what it already trusts (``config`` for keys
  that are not trust anchors, ``restart-camera``, ``deploy`` from the configured registry,
  ``rollback`` to the previous version on disk); whoever may publish to the device's command
  topics (the broker's ACL) may send them;
- ``sensitive``: changes whom the device trusts; the payload must carry ``{"signed": <document
  signed by the fleet root key>}`` (refused here, before the handler runs, when it does not) and
  the handler verifies it (:mod:`edge.util.trustroot`). ``config`` and ``rollback`` also take a
  signed document for what goes beyond operational (trust anchors, an older model version).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge.errors import CommandError, EdgeError
from edge.transport.mqtt import InboundMessage, MessageCallback
from edge.util.trustroot import SIGNED_KEY, Sensitivity

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class CommandTransport(Protocol):
    def topic(self, *parts: str) -> str: ...
    def topic_filter(self, *parts: str) -> str: ...
    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None: ...
    def respond(self, request: InboundMessage, payload: dict[str, Any]) -> bool: ...


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    fields: dict[str, tuple[type, ...]]  # accepted keys -> accepted JSON types (all optional)
    required: frozenset[str] = frozenset()
    sensitivity: Sensitivity = Sensitivity.SENSITIVE


_JSON_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object",
                    list: "array", type(None): "null"}


class CommandRouter:
    """Subscribes to each registered command's topic and dispatches validated payloads."""

    def __init__(self, transport: CommandTransport, queue_size: int = 16) -> None:
        self._transport = transport
        self._commands: dict[str, Command] = {}
        self._queue: queue.Queue[tuple[Command, InboundMessage] | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self.handled = 0
        self.rejected = 0

    def register(self, name: str, handler: Handler, fields: dict[str, type | tuple[type, ...]] | None = None,
                 required: tuple[str, ...] = (), *, sensitivity: Sensitivity) -> None:
        """Route `cmd/<name>` to `handler`; a sensitive command always requires a signed document."""
        normal = {k: (v if isinstance(v, tuple) else (v,)) for k, v in (fields or {}).items()}
        needed = frozenset(required)
        if sensitivity is Sensitivity.SENSITIVE:
            normal[SIGNED_KEY] = (dict,)
            needed |= {SIGNED_KEY}
        self._commands[name] = Command(name, handler, normal, needed, sensitivity)

    def classification(self) -> dict[str, str]:
        """Each registered command's sensitivity (ping reports it; the docs list it)."""
        return {name: command.sensitivity.value for name, command in sorted(self._commands.items())}

    def start(self) -> None:
        if self._thread is not None:
            return
        self._transport.subscribe(self._transport.topic_filter("cmd", "+"), self._on_any, qos=1)
        self._thread = threading.Thread(target=self._worker, name="fleet-commands", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        return {"commands": sorted(self._commands), "handled": self.handled, "rejected": self.rejected,
                "queued": self._queue.qsize()}

    @property
    def names(self) -> list[str]:
        return sorted(self._commands)

    # -- paho thread: cheap checks, then hand over --------------------------------------------

    def _on_any(self, message: InboundMessage) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        command = self._commands.get(name)
        if command is None:
            if message.retain:
                return
            self._reply(name, message, error=f"unknown command {name!r} (known: {', '.join(self.names)})")
            return
        self._on_message(command, message)

    def _on_message(self, command: Command, message: InboundMessage) -> None:
        if message.retain:
            logger.warning("ignoring retained command on %s (clear it with an empty retained message)", message.topic)
            return
        try:
            self._queue.put_nowait((command, message))
        except queue.Full:
            self._reply(command.name, message, error="busy: too many commands queued; retry later")

    # -- worker thread -------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            command, message = item
            try:
                result = command.handler(self.parse(command, message.payload))
            except EdgeError as exc:  # CommandError and any error a user can cause: its one-line message
                self._reply(command.name, message, error=str(exc))
            except Exception as exc:  # a handler bug is an error response, never a dead worker
                logger.exception("command %s failed", command.name)
                self._reply(command.name, message, error=f"internal error: {exc}")
            else:
                self.handled += 1
                self._reply(command.name, message, result=result)

    def parse(self, command: Command, payload: bytes) -> dict[str, Any]:
        """The payload as a dict of accepted keys; CommandError naming the problem otherwise."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise CommandError(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
        if not payload.strip():
            doc: Any = {}
        else:
            try:
                doc = json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise CommandError(f"payload is not valid JSON: {exc}") from None
            except RecursionError:
                raise CommandError("payload is not valid JSON: nested too deeply") from None
        if not isinstance(doc, dict):
            raise CommandError(f"payload must be a JSON object, got {_JSON_TYPE_NAMES.get(type(doc), type(doc).__name__)}")
        unknown = sorted(set(doc) - set(command.fields))
        if unknown:
            accepted = ", ".join(sorted(command.fields)) or "none"
            raise CommandError(f"unknown key(s) {unknown} for {command.name} (accepted: {accepted})")
        if command.sensitivity is Sensitivity.SENSITIVE and not isinstance(doc.get(SIGNED_KEY), dict):
            raise CommandError(f"{command.name} is a sensitive command: its payload must be {{\"signed\": <a "
                               "document signed by the fleet root key>}}; make one with `edgectl trust sign`")
        missing = sorted(command.required - set(doc))
        if missing:
            raise CommandError(f"{command.name} needs key(s) {missing}")
        for key, value in doc.items():
            types = command.fields[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                want = " or ".join(_JSON_TYPE_NAMES.get(t, t.__name__) for t in types)
                got = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
                raise CommandError(f"{key}: must be {want}, got {got}")
        return doc

    def _reply(self, name: str, message: InboundMessage, result: dict[str, Any] | None = None,
               error: str | None = None) -> None:
        if error is not None:
            self.rejected += 1
            logger.warning("command %s refused: %s", name, error)
        body: dict[str, Any] = {"ok": error is None, "command": name}
        if error is not None:
            body["error"] = error
        else:
            body["result"] = result or {}
        if not message.response_topic:
            logger.info("command %s done (no response topic): %s", name, body)
            return
        try:
            self._transport.respond(message, body)
        except Exception:
            logger.exception("could not send the response to %s", name)
