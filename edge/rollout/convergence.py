"""Desired state -> the next rollout step: a pure function of the model state and the desired digest.

The device's desired-state agent (:mod:`edge.device.desired`) asks :func:`converge` after every
change of the desired document or of the model state, and carries out the action it names once per
generation:

- ``DEPLOY``: follow the target pinned to its digest (``ref@digest``) through the normal rollout
  (download, verify signature and freshness, golden images, switch, probation). A generation that
  names a digest this device once refused is tried once more (an operator asked for it again).
- ``ROLLBACK``: the desired digest is the previous version still on disk (an aborted rollout sets
  the previous desired state back): the one-step rollback every operator may ask for without a
  signature. Anything older needs a signed rollback document, as for ``cmd/deploy``; desired state
  never goes around rollback protection.
- ``NONE``: wait (a step is running, or the manager retries a transient failure itself) or done.

While a rollout step of another digest runs, nothing is asked: the request would queue behind it
and could be judged against the version it is about to install.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from edge.models.state import ModelState, RolloutState
from edge.rollout.policy import stale_version
from edge.util.shadow import ModelProgress

logger = logging.getLogger(__name__)

_BUSY = {RolloutState.DOWNLOADING: ModelProgress.INSTALLING, RolloutState.VALIDATING: ModelProgress.VALIDATING,
         RolloutState.PROBATION: ModelProgress.PENDING}


class Action(str, Enum):
    NONE = "none"
    DEPLOY = "deploy"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Convergence:
    progress: ModelProgress
    action: Action = Action.NONE
    reason: str | None = None
    version: int | None = None
    waiting: bool = False  # another rollout step runs: nothing was judged yet


def converge(state: ModelState, digest: str, pinned: str, *, retry: bool, now: float) -> Convergence:
    """The progress towards serving `digest` (followed as `pinned`) and the step to take now.

    `retry`: this generation has not been judged yet, so a digest the device refused before is
    deployed once more instead of being reported as failed. `now`: wall-clock time (signed rollback
    allowances expire)."""
    version = state.version_of(digest)
    busy = state.state in _BUSY
    if state.serving_digest == digest:
        if state.state is RolloutState.PROBATION:
            return Convergence(ModelProgress.PROBATION, version=state.serving_version)
        if state.ref != pinned and not busy:  # serving it already: from now on follow it (installs nothing)
            return Convergence(ModelProgress.SERVING, Action.DEPLOY, version=state.serving_version)
        return Convergence(ModelProgress.SERVING, version=state.serving_version)
    if busy:
        if state.ref == pinned:
            return Convergence(_BUSY[state.state], version=version)
        return Convergence(ModelProgress.PENDING, reason=f"waiting for the running step ({state.state}) to end",
                           version=version, waiting=True)
    if digest == state.previous_digest and state.previous_version is not None:
        return Convergence(ModelProgress.PENDING, Action.ROLLBACK, version=state.previous_version)
    if digest in state.bad and not retry:
        switched_once = digest in state.validated and (version is None or stale_version(state, version, digest, now)
                                                       is None)
        progress = ModelProgress.ROLLED_BACK if switched_once else ModelProgress.FAILED
        return Convergence(progress, reason=state.bad[digest], version=version)
    if state.ref != pinned or retry:
        return Convergence(ModelProgress.PENDING, Action.DEPLOY, version=version)
    # followed, nothing running: the manager retries transient failures (registry down) by itself
    return Convergence(ModelProgress.PENDING if state.last_error else ModelProgress.INSTALLING,
                       reason=state.last_error, version=version)
