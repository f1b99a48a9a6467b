"""The rollout's decisions as pure functions: no threads, no registry, no model runtime.

TF Serving splits its lifecycle into a Source, a SourceAdapter, a Loader and a Manager that asks an
``AspiredVersionPolicy`` what to do next. The gateway's rollout mirrors that: the watcher finds
digests (:mod:`edge.rollout.watcher`), the installer turns one into a version folder
(:mod:`edge.rollout.installer`), validation loads and checks it (:mod:`edge.rollout.validation`),
the manager switches and retires (:mod:`edge.rollout.manager`), and every "what now?" is answered
here from plain values, so each rule can be tested alone:

- :func:`decide_check`: a resolved digest against the device's model state -> nothing, skip a
  known-bad digest, retry it (an operator asked), validate an installed folder, or install;
- :func:`install_failure`: is a failed install the artifact's fault (never retried automatically)
  or the registry's (retried with backoff)?
- :func:`judge_probation`: error rate and latency of the new version against the old one's
  -> keep watching, passed, or roll back with the reason;
- :func:`stale_version`: is a version older than one this device already accepted (a rollback
  attack from the registry or the broker), and does a signed rollback allow it?
- :func:`judge_channel`: is the followed channel's newest signed statement fresh, expired, missing or
  older than one already seen (freeze and replay of a channel)?
- :func:`baseline_latency_ms` and :func:`next_backoff`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from edge.errors import ArtifactError, DigestMismatch, ModelInstallError, RegistryError
from edge.models.artifact.channel import ChannelStatement
from edge.models.state import ModelState
from edge.util.signed import utc_text

logger = logging.getLogger(__name__)

DIGEST_RETRIES = 3  # a blob that keeps hashing wrong is treated as corrupt at the source
MIN_PROBATION_FRAMES = 20  # the error rate is judged once this many frames ran on the new version
MIN_LATENCY_BATCHES = 10  # ... and the latency once this many batches did
WARMUP_BATCHES = 10  # the first batches on a new version (allocations, new batch shapes) do not count
LATENCY_SLACK_MS = 2.0  # differences below this are noise, not regressions, whatever the ratio
BASELINE_WINDOW_S = 30.0  # the old version's latency is averaged over at least this much history


@dataclass(frozen=True)
class RolloutSettings:
    poll_interval_s: float = 300.0
    keep_versions: int = 3
    tolerance: float = 1e-3
    latency_factor: float = 2.0
    require_golden: bool = True
    probation_s: float = 60.0
    probation_max_error_rate: float = 0.05
    probation_latency_factor: float = 2.0
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 300.0


@dataclass(frozen=True)
class Counters:
    """The pipeline's cumulative counters at one moment."""

    mono: float
    classified: int
    failed: int
    batches: int
    inference_ms: float


@dataclass(frozen=True)
class Probation:
    """A version just switched in, watched until `ends`."""

    version: int
    digest: str
    baseline: Counters  # the counters at the switch
    baseline_ms: float | None  # the old version's mean inference ms per batch before the switch
    ends: float
    latency_from: Counters | None = None  # the counters after the warm-up batches


class Verdict(Enum):
    CONTINUE = "continue"
    PASSED = "passed"
    ROLL_BACK = "roll-back"


@dataclass(frozen=True)
class ProbationJudgement:
    verdict: Verdict
    probation: Probation  # updated (warm-up end recorded)
    frames: int
    failed: int
    reason: str | None = None


def judge_probation(probation: Probation, current: Counters, now: float,
                    settings: RolloutSettings) -> ProbationJudgement:
    """Keep watching, passed, or roll back (error rate above the limit, or mean latency above
    `probation_latency_factor` x the old version's and more than LATENCY_SLACK_MS slower)."""
    ok = current.classified - probation.baseline.classified
    failed = current.failed - probation.baseline.failed
    total = ok + failed
    finished = now >= probation.ends
    if total >= MIN_PROBATION_FRAMES or (finished and total):
        rate = failed / total
        if rate > settings.probation_max_error_rate:
            return ProbationJudgement(
                Verdict.ROLL_BACK, probation, total, failed,
                f"probation: error rate {rate:.2f} > {settings.probation_max_error_rate:g} "
                f"({failed} of {total} frames failed)")
    if probation.latency_from is None and current.batches - probation.baseline.batches >= WARMUP_BATCHES:
        probation = replace(probation, latency_from=current)
    start = probation.latency_from
    batches = current.batches - start.batches if start is not None else 0
    if probation.baseline_ms and start is not None and batches >= MIN_LATENCY_BATCHES:
        mean = (current.inference_ms - start.inference_ms) / batches
        if mean > settings.probation_latency_factor * probation.baseline_ms \
                and mean - probation.baseline_ms > LATENCY_SLACK_MS:
            return ProbationJudgement(
                Verdict.ROLL_BACK, probation, total, failed,
                f"probation: mean inference {mean:.1f} ms > {settings.probation_latency_factor:g}"
                f" x {probation.baseline_ms:.1f} ms before the switch")
    return ProbationJudgement(Verdict.PASSED if finished else Verdict.CONTINUE, probation, total, failed)


def baseline_latency_ms(samples: Sequence[Counters], now: float, settings: RolloutSettings) -> float | None:
    """Mean inference ms per batch over the recent samples (None with too few batches to tell)."""
    recent = [s for s in samples if s.mono >= now - max(BASELINE_WINDOW_S, settings.probation_s)]
    if len(recent) < 2:
        return None
    first, last = recent[0], recent[-1]
    batches = last.batches - first.batches
    return (last.inference_ms - first.inference_ms) / batches if batches >= MIN_LATENCY_BATCHES else None


def next_backoff(current_s: float, settings: RolloutSettings) -> float:
    """Doubling, capped by backoff_max_s and by the poll interval (never below the first delay)."""
    return min(current_s * 2, settings.backoff_max_s, max(settings.poll_interval_s, settings.backoff_initial_s))


class Check(Enum):
    UP_TO_DATE = "up-to-date"  # the digest already serves
    SKIP_BAD = "skip-bad"  # refused or rolled back before; not deployed again automatically
    VALIDATE = "validate"  # installed already (e.g. after a restart): validate and switch
    INSTALL = "install"  # download, verify, move in, then validate and switch


@dataclass(frozen=True)
class CheckDecision:
    action: Check
    version: int | None = None  # for VALIDATE
    retry_bad: bool = False  # an operator asked for a known-bad digest explicitly: try once more


def decide_check(digest: str, state: ModelState, *, forced: bool, version_present: bool) -> CheckDecision:
    """What to do with the digest the followed reference resolved to.

    `version_present`: the version folder recorded for `digest` (if any) is still complete on disk.
    """
    if digest == state.serving_digest:
        return CheckDecision(Check.UP_TO_DATE)
    retry_bad = False
    if digest in state.bad:
        if not forced:
            return CheckDecision(Check.SKIP_BAD)
        retry_bad = True
    version = state.version_of(digest)
    if version is not None and version_present:
        return CheckDecision(Check.VALIDATE, version=version, retry_bad=retry_bad)
    return CheckDecision(Check.INSTALL, retry_bad=retry_bad)


@dataclass(frozen=True)
class InstallFailure:
    permanent: bool  # the artifact's fault: recorded as bad, not retried automatically
    reason: str
    unexpected: bool = False  # not a registry or artifact error: a bug or an OS problem worth a traceback


def install_failure(error: BaseException, digest_failures: int) -> InstallFailure:
    """Classify an install error. `digest_failures`: how often this digest already hashed wrong,
    this failure included."""
    if isinstance(error, DigestMismatch):
        return InstallFailure(digest_failures >= DIGEST_RETRIES, str(error))
    if isinstance(error, RegistryError):  # down, auth, not found: the registry's problem, not the artifact's
        return InstallFailure(False, str(error))
    if isinstance(error, (ArtifactError, ModelInstallError)):
        return InstallFailure(True, str(error))
    return InstallFailure(False, f"{type(error).__name__}: {error}", unexpected=True)


def stale_version(state: ModelState, version: int, digest: str, now: float) -> str | None:
    """Why `version` (`digest`) must not be installed or switched in, or None when it may.

    Refused: a version below the highest this device ever validated, or another build of that same
    version number, unless a rollback document signed by the fleet root key allowed exactly this
    digest and version and has not expired. The automatic probation rollback and ``cmd/rollback``
    go back to the previous version on disk without coming here: that version was accepted before
    and is at most one step back (docs/threat-model.md)."""
    highest, highest_digest = state.highest_version, state.highest_digest
    if highest is None or version > highest or (version == highest and digest == highest_digest):
        return None
    allowed = state.rollback_allowed.get(digest)
    if allowed is not None and allowed.get("version") == version and float(allowed.get("expires", 0)) > now:
        return None
    if allowed is not None and allowed.get("version") == version:
        why = "its signed rollback document expired"
    elif version == highest:
        why = f"another build ({digest[:19]}) of version {highest} than the one accepted ({str(highest_digest)[:19]})"
    else:
        why = f"older than version {highest}, which this device already accepted"
    return (f"rollback refused: version {version} is {why}; publish a new version number, or allow this one "
            f"with a signed rollback document (`edgectl trust sign rollback --version {version} --digest {digest}`)")


class ChannelStatus(str, Enum):
    """What a followed channel's signed statements say (the `channel.status` of the `model` state)."""

    UNSIGNED = "unsigned"  # no statement ever seen for this channel: none is required
    FRESH = "fresh"  # the newest statement names this digest and has not expired
    EXPIRED = "expired"  # the newest statement expired: not re-signed in time, or a frozen registry
    MISSING = "missing"  # statements were seen before, none names this digest now
    REPLAYED = "replayed"  # the newest statement is older than one already seen: refused

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ChannelVerdict:
    status: ChannelStatus
    record: dict[str, Any] | None  # what the state keeps for the channel (None: nothing to keep)
    reason: str | None = None

    @property
    def problem(self) -> bool:
        """A fresh statement was required and is not there: health reports it, new digests wait."""
        return self.status in (ChannelStatus.EXPIRED, ChannelStatus.MISSING, ChannelStatus.REPLAYED)


def judge_channel(channel: str, seen: dict[str, Any] | None, statement: ChannelStatement | None, digest: str,
                  now: float) -> ChannelVerdict:
    """The newest verified statement for `channel` at `digest` (None: there is none) against the newest
    one seen before (`seen`, from the model state). Once a channel has had a statement, a fresh one is
    required: TUF's timestamp role, so a registry that freezes the channel is noticed."""
    def record(status: ChannelStatus, reason: str | None, source: dict[str, Any]) -> ChannelVerdict:
        return ChannelVerdict(status, {**source, "status": status.value, "reason": reason}, reason)

    if statement is None:
        if seen is None:
            return ChannelVerdict(ChannelStatus.UNSIGNED, None)
        return record(ChannelStatus.MISSING, f"channel {channel}: no signed channel statement for {digest[:19]} "
                      f"(the newest seen, for {str(seen.get('digest'))[:19]}, expires {utc_text(seen['expires'])}); "
                      "the publisher re-signs with `edgectl model promote --lifetime`", seen)
    found = {"digest": statement.digest, "version": statement.version, "issued_at": statement.issued_at,
             "expires": statement.expires}
    if seen is not None and statement.issued_at < float(seen.get("issued_at", 0)):
        return record(ChannelStatus.REPLAYED, f"channel {channel}: statement issued {utc_text(statement.issued_at)} "
                      f"is older than one already seen (issued {utc_text(seen['issued_at'])}); refused", seen)
    if statement.expires <= now:
        return record(ChannelStatus.EXPIRED, f"channel {channel}: the newest signed statement (issued "
                      f"{utc_text(statement.issued_at)}) expired at {utc_text(statement.expires)}; the publisher did not "
                      "re-sign it in time, or the registry serves a frozen channel", found)
    return record(ChannelStatus.FRESH, None, found)


def channel_expired(channel: str, seen: dict[str, Any] | None, now: float) -> ChannelVerdict | None:
    """When the registry cannot be asked: the statement seen last, judged on the clock alone."""
    if seen is None or float(seen.get("expires", 0)) > now or seen.get("status") == ChannelStatus.EXPIRED.value:
        return None
    reason = (f"channel {channel}: the newest signed statement seen expired at {utc_text(seen['expires'])} "
              "and the registry cannot be reached")
    return ChannelVerdict(ChannelStatus.EXPIRED, {**seen, "status": ChannelStatus.EXPIRED.value, "reason": reason},
                          reason)
