"""The rollout's Source: which digest the followed registry reference points to, when to look again,
and the operator's deploy/rollback requests waiting for the manager.

The reference followed is the one an operator deployed last (``cmd/deploy {"ref"}``, persisted in
the model state) or else the configured one. It is resolved with a cheap HEAD every
``poll_interval_s`` and at once on a deploy request; a failed resolve is retried with capped
exponential backoff and reported once per distinct problem.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum
from typing import Any

from edge.errors import RolloutError
from edge.rollout.policy import RolloutSettings, next_backoff
from edge.util.ociref import Reference

logger = logging.getLogger(__name__)

MAX_QUEUED_REQUESTS = 32


class RequestKind(Enum):
    DEPLOY = "deploy"
    ROLLBACK = "rollback"


@dataclass
class Request:
    kind: RequestKind
    ref: Reference | None  # DEPLOY: the ref to follow from now on (None: back to the configured one)
    future: Future[dict[str, Any]]


class TagWatcher:
    """Poll schedule, backoff, resolution and queued requests for one model's registry reference."""

    def __init__(self, configured: Reference, resolve: Callable[[Reference], str], settings: RolloutSettings,
                 wake: threading.Event) -> None:
        self.configured = configured
        self._resolve = resolve
        self._settings = settings
        self._wake = wake
        self._requests: queue.Queue[Request] = queue.Queue(maxsize=MAX_QUEUED_REQUESTS)
        self._next_poll = time.monotonic()
        self.backoff_s = settings.backoff_initial_s
        self.checks = 0
        self.check_failures = 0

    # -- which reference -------------------------------------------------------------------------

    def active_ref(self, deployed: str | None) -> Reference:
        """What is followed: the ref an operator deployed (`deployed`, from the model state), else the configured one."""
        if deployed:
            try:
                return Reference.parse(deployed)
            except ValueError:
                logger.error("ignoring unreadable deployed ref %r in the model state", deployed)
        return self.configured

    def parse_deploy_ref(self, ref: str) -> Reference:
        """A ref an operator asks to follow; RolloutError when unreadable or on another registry."""
        try:
            target = Reference.parse(ref)
        except ValueError as exc:
            raise RolloutError(str(exc)) from None
        if target.registry != self.configured.registry:
            raise RolloutError(f"ref {ref!r} is on registry {target.registry}; this device is configured "
                               f"for {self.configured.registry} (credentials and TLS settings are per registry)")
        return target

    # -- requests ----------------------------------------------------------------------------------

    def submit(self, kind: RequestKind, ref: Reference | None = None) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        try:
            self._requests.put_nowait(Request(kind, ref, future))
        except queue.Full:
            raise RolloutError("too many rollout requests queued; retry later") from None
        self._wake.set()
        return future

    def take_requests(self) -> list[Request]:
        taken: list[Request] = []
        while True:
            try:
                taken.append(self._requests.get_nowait())
            except queue.Empty:
                return taken

    def put_back(self, requests: list[Request]) -> None:
        """Requests the manager cannot act on yet (a probation is running): kept, in order."""
        for request in requests:
            self._requests.put_nowait(request)

    # -- schedule ------------------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now >= self._next_poll

    def resolve(self, ref: Reference) -> str:
        """The digest `ref` points to now; on success the next poll is one interval away and the
        backoff resets. Errors propagate (see :meth:`failed`)."""
        self.checks += 1
        digest = ref.digest or self._resolve(ref)
        self._next_poll = time.monotonic() + self._settings.poll_interval_s
        self.backoff_s = self._settings.backoff_initial_s
        return digest

    def failed(self, problem: str) -> None:
        """A resolve or a transient install failure: look again after the current backoff, which grows."""
        self.check_failures += 1
        self._next_poll = time.monotonic() + self.backoff_s
        logger.warning("model check failed: %s; retrying in %.0fs", problem, self.backoff_s)
        self.backoff_s = next_backoff(self.backoff_s, self._settings)
