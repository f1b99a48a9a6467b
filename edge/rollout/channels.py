"""Freeze detection: the followed channel's signed statements, judged on every check.

A channel tag (``stable``) that the publisher signs with an expiring statement
(:mod:`edge.models.artifact.channel`, ``edgectl model promote --lifetime``) must be re-signed
within its lifetime. On every check the newest statement that verifies and names this channel and
the digest it points at is judged (:func:`edge.rollout.policy.judge_channel`) and kept in the model
state (``channels``, persisted, so an older statement is refused after a restart too). A problem
(expired, missing once statements were seen, older than one seen) is an event, a line in health's
``problems`` and the ``channel`` of the `model` state, and the channel's new digests are not
installed until a fresh statement names them; the serving version keeps serving.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.models.state import ModelState
from edge.rollout.installer import ModelInstaller, is_channel
from edge.rollout.policy import ChannelStatus, ChannelVerdict, channel_expired, judge_channel
from edge.util.ociref import Reference
from edge.util.signed import utc_text

logger = logging.getLogger(__name__)

EventSink = Callable[..., None]  # emit(kind, **payload)


def channel_key(ref: Reference) -> str:
    return f"{ref.registry}/{ref.repository}:{ref.tag}"


class ChannelWatch:
    """Checks and records one model's followed channel; `emit(kind, **payload)`, `save()` persist and publish."""

    def __init__(self, installer: ModelInstaller, state: ModelState, lock: threading.RLock, emit: EventSink,
                 save: Callable[[], None]) -> None:
        self.installer = installer
        self.state = state
        self._lock = lock
        self._emit = emit
        self._save = save

    def check(self, ref: Reference, digest: str) -> bool:
        """Judge the statements for `digest`; True when a fresh one is required and missing (do not
        install a new digest from this channel now)."""
        key = channel_key(ref)
        try:
            found = self.installer.channel_statement(ref, digest)
        except Exception as exc:  # registry trouble: judged on the clock, retried with the next check
            logger.warning("cannot read the statements of %s: %s", key, exc)
            self.unreachable(ref)
            return self.problem(ref) is not None
        if found is None:
            return False
        statement, skipped = found
        for why in skipped[:4]:
            logger.info("%s: statement skipped: %s", key, why)
        self._apply(key, judge_channel(key, self.state.channels.get(key), statement, digest, time.time()))
        return self.problem(ref) is not None

    def unreachable(self, ref: Reference) -> None:
        """The registry cannot be asked: a statement seen before may still expire."""
        if is_channel(ref):
            key = channel_key(ref)
            verdict = channel_expired(key, self.state.channels.get(key), time.time())
            if verdict is not None:
                self._apply(key, verdict)

    def problem(self, ref: Reference) -> str | None:
        record = self.state.channels.get(channel_key(ref)) if is_channel(ref) else None
        return str(record["reason"]) if record and record.get("reason") else None

    def summary(self, ref: Reference) -> dict[str, Any] | None:
        """The `channel` of the `model` state: the followed channel's newest statement and its status."""
        record = self.state.channels.get(channel_key(ref)) if is_channel(ref) else None
        if record is None:
            return None
        times = {k: utc_text(float(record[k])) for k in ("issued_at", "expires") if isinstance(record.get(k), (int, float))}
        return {"name": channel_key(ref), **record, **times}

    def _apply(self, key: str, verdict: ChannelVerdict) -> None:
        with self._lock:
            previous = self.state.channels.get(key)
            if verdict.record is None or verdict.record == previous:
                return
            self.state.channels[key] = verdict.record
        changed = previous is None or previous.get("status") != verdict.status.value \
            or previous.get("issued_at") != verdict.record.get("issued_at")
        if verdict.problem and changed:
            logger.warning("%s", verdict.reason)
            details = {"channel": key, "status": verdict.status.value, "reason": verdict.reason,
                       "digest": verdict.record.get("digest"), "expires": utc_text(float(verdict.record["expires"]))}
            if verdict.status is ChannelStatus.REPLAYED:
                self._emit("model_channel_statement_refused", **details)
            else:
                self._emit("model_channel_expired", **details)
        elif changed:
            logger.info("channel %s: fresh signed statement until %s", key, verdict.record.get("expires"))
        self._save()
