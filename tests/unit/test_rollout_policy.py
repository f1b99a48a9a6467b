"""The rollout's decisions (edge.rollout.policy) as the pure functions they are: plain values in, a
verdict out; no threads, no registry, no model runtime."""
from __future__ import annotations

from typing import Any

import pytest

from edge.errors import ArtifactError, DigestMismatch, ModelInstallError, RegistryError
from edge.models.artifact.channel import ChannelStatement
from edge.models.state import ModelState
from edge.rollout.policy import (
    BASELINE_WINDOW_S,
    DIGEST_RETRIES,
    LATENCY_SLACK_MS,
    MIN_LATENCY_BATCHES,
    MIN_PROBATION_FRAMES,
    WARMUP_BATCHES,
    ChannelStatus,
    Check,
    Counters,
    Probation,
    RolloutSettings,
    Verdict,
    baseline_latency_ms,
    channel_expired,
    decide_check,
    install_failure,
    judge_channel,
    judge_probation,
    next_backoff,
    stale_version,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
SETTINGS = RolloutSettings(probation_s=60.0, probation_max_error_rate=0.05, probation_latency_factor=2.0)
START = Counters(mono=1000.0, classified=500, failed=3, batches=200, inference_ms=2000.0)


def probation(baseline_ms: float | None = 10.0, ends: float = 1060.0) -> Probation:
    return Probation(version=2, digest=D2, baseline=START, baseline_ms=baseline_ms, ends=ends)


def after(ok: int = 0, failed: int = 0, batches: int = 0, ms: float = 0.0, since: Counters = START,
          mono: float = 1001.0) -> Counters:
    """The counters `ok`/`failed` frames and `batches` batches (taking `ms` in all) after `since`."""
    return Counters(mono, since.classified + ok, since.failed + failed, since.batches + batches,
                    since.inference_ms + ms)


# -- judge_probation: the error rate ------------------------------------------------------------


def test_an_error_rate_above_the_limit_rolls_back_naming_rate_and_counts() -> None:
    judged = judge_probation(probation(), after(ok=18, failed=2), 1010.0, SETTINGS)
    assert judged.verdict is Verdict.ROLL_BACK and (judged.frames, judged.failed) == (20, 2)
    assert judged.reason == "probation: error rate 0.10 > 0.05 (2 of 20 frames failed)"


@pytest.mark.parametrize("failed", [0, 1])  # 1 of 20 is 0.05: at the limit is not above it
def test_an_error_rate_at_or_below_the_limit_keeps_watching(failed: int) -> None:
    judged = judge_probation(probation(), after(ok=20 - failed, failed=failed), 1010.0, SETTINGS)
    assert judged.verdict is Verdict.CONTINUE and judged.reason is None
    assert (judged.frames, judged.failed) == (20, failed)


def test_the_error_rate_waits_for_enough_frames_while_probation_runs() -> None:
    few = MIN_PROBATION_FRAMES - 1
    judged = judge_probation(probation(), after(failed=few), 1010.0, SETTINGS)  # every frame failed, but few
    assert judged.verdict is Verdict.CONTINUE and (judged.frames, judged.failed) == (few, few)
    assert judge_probation(probation(), after(ok=few - 1, failed=1), 1010.0, SETTINGS).verdict is Verdict.CONTINUE


def test_at_the_end_any_frames_are_judged_and_none_at_all_pass() -> None:
    ends = probation().ends
    judged = judge_probation(probation(), after(ok=4, failed=1), ends, SETTINGS)  # 5 frames, 0.20
    assert judged.verdict is Verdict.ROLL_BACK and "1 of 5 frames failed" in str(judged.reason)
    assert judge_probation(probation(), after(ok=5), ends, SETTINGS).verdict is Verdict.PASSED
    nothing = judge_probation(probation(), after(), ends + 100.0, SETTINGS)  # total == 0: no camera sent frames
    assert nothing.verdict is Verdict.PASSED and (nothing.frames, nothing.failed, nothing.reason) == (0, 0, None)
    assert judge_probation(probation(), after(), ends - 0.001, SETTINGS).verdict is Verdict.CONTINUE


def test_the_error_rate_is_counted_from_the_switch_not_from_process_start() -> None:
    # START already carries 3 failures of the old version: they are not the new version's
    judged = judge_probation(probation(), after(ok=MIN_PROBATION_FRAMES), 1010.0, SETTINGS)
    assert judged.failed == 0 and judged.verdict is Verdict.CONTINUE


# -- judge_probation: the latency rule ----------------------------------------------------------


def warmed_up(baseline_ms: float | None = 10.0, warmup_ms_each: float = 10.0) -> tuple[Probation, Counters]:
    """A probation past its warm-up batches: (probation with latency_from recorded, the counters then)."""
    current = after(ok=40, batches=WARMUP_BATCHES, ms=WARMUP_BATCHES * warmup_ms_each)
    judged = judge_probation(probation(baseline_ms), current, 1005.0, SETTINGS)
    assert judged.verdict is Verdict.CONTINUE
    assert judged.probation.latency_from == current
    return judged.probation, current


def test_warm_up_batches_are_not_timed() -> None:
    early = after(ok=40, batches=WARMUP_BATCHES - 1, ms=1e6)
    judged = judge_probation(probation(), early, 1005.0, SETTINGS)
    assert judged.verdict is Verdict.CONTINUE and judged.probation.latency_from is None
    # very slow warm-up (allocations, new batch shapes), normal afterwards: kept
    state, since = warmed_up(warmup_ms_each=500.0)
    fine = after(ok=40, batches=MIN_LATENCY_BATCHES, ms=MIN_LATENCY_BATCHES * 12.0, since=since)
    judged = judge_probation(state, fine, 1010.0, SETTINGS)
    assert judged.verdict is Verdict.CONTINUE and judged.probation.latency_from == since


def test_a_latency_regression_after_warm_up_rolls_back_naming_both_means() -> None:
    state, since = warmed_up()
    slow = after(ok=40, batches=MIN_LATENCY_BATCHES, ms=MIN_LATENCY_BATCHES * 25.0, since=since)
    judged = judge_probation(state, slow, 1010.0, SETTINGS)
    assert judged.verdict is Verdict.ROLL_BACK
    assert judged.reason == "probation: mean inference 25.0 ms > 2 x 10.0 ms before the switch"
    # the same mean over fewer batches than MIN_LATENCY_BATCHES is not judged yet
    short = after(ok=40, batches=MIN_LATENCY_BATCHES - 1, ms=(MIN_LATENCY_BATCHES - 1) * 25.0, since=since)
    assert judge_probation(state, short, 1010.0, SETTINGS).verdict is Verdict.CONTINUE
    # a factor of exactly 2 is not above it
    even = after(ok=40, batches=MIN_LATENCY_BATCHES, ms=MIN_LATENCY_BATCHES * 20.0, since=since)
    assert judge_probation(state, even, 1010.0, SETTINGS).verdict is Verdict.CONTINUE


def test_differences_within_the_slack_are_noise_whatever_the_ratio() -> None:
    assert LATENCY_SLACK_MS == 2.0
    state, since = warmed_up(baseline_ms=1.0, warmup_ms_each=1.0)
    # 2.9 ms is 2.9x the old 1.0 ms, but only 1.9 ms slower: not a regression
    within = after(ok=40, batches=MIN_LATENCY_BATCHES, ms=MIN_LATENCY_BATCHES * 2.9, since=since)
    assert judge_probation(state, within, 1010.0, SETTINGS).verdict is Verdict.CONTINUE
    beyond = after(ok=40, batches=MIN_LATENCY_BATCHES, ms=MIN_LATENCY_BATCHES * 3.5, since=since)
    judged = judge_probation(state, beyond, 1010.0, SETTINGS)
    assert judged.verdict is Verdict.ROLL_BACK and "3.5 ms > 2 x 1.0 ms" in str(judged.reason)


@pytest.mark.parametrize("baseline_ms", [None, 0.0])
def test_without_a_baseline_latency_is_not_judged(baseline_ms: float | None) -> None:
    state, since = warmed_up(baseline_ms=baseline_ms)
    slow = after(ok=40, batches=5 * MIN_LATENCY_BATCHES, ms=5 * MIN_LATENCY_BATCHES * 1000.0, since=since)
    assert judge_probation(state, slow, 1010.0, SETTINGS).verdict is Verdict.CONTINUE
    assert judge_probation(state, slow, state.ends, SETTINGS).verdict is Verdict.PASSED


def test_the_latency_factor_comes_from_the_settings() -> None:
    state, since = warmed_up()
    slow = after(ok=40, batches=MIN_LATENCY_BATCHES, ms=MIN_LATENCY_BATCHES * 25.0, since=since)
    lenient = RolloutSettings(probation_latency_factor=3.0)
    assert judge_probation(state, slow, 1010.0, lenient).verdict is Verdict.CONTINUE
    assert judge_probation(state, slow, state.ends, lenient).verdict is Verdict.PASSED


def test_the_error_rate_is_judged_before_the_latency() -> None:
    state, since = warmed_up()
    both = after(ok=10, failed=30, batches=MIN_LATENCY_BATCHES, ms=MIN_LATENCY_BATCHES * 50.0, since=since)
    assert "error rate" in str(judge_probation(state, both, 1010.0, SETTINGS).reason)


# -- baseline_latency_ms ------------------------------------------------------------------------


def sample(mono: float, batches: int, ms: float) -> Counters:
    return Counters(mono, classified=batches * 4, failed=0, batches=batches, inference_ms=ms)


def test_the_baseline_is_the_mean_per_batch_over_the_recent_window() -> None:
    samples = [sample(0.0, 0, 0.0), sample(50.0, 0, 0.0),  # older than the window: not counted
               sample(100.0, 100, 9000.0), sample(130.0, 110, 9050.0), sample(160.0, 120, 9100.0)]
    assert baseline_latency_ms(samples, 160.0, SETTINGS) == pytest.approx(5.0)  # 100 ms over 20 batches


def test_the_window_is_at_least_baseline_window_s_and_at_least_the_probation() -> None:
    samples = [sample(t, int(t), t * 3.0) for t in range(0, 200, 5)]  # 3 ms per batch throughout
    for probation_s, oldest in ((5.0, 195 - BASELINE_WINDOW_S), (90.0, 105.0)):
        settings = RolloutSettings(probation_s=probation_s)
        assert baseline_latency_ms(samples, 195.0, settings) == pytest.approx(3.0)
        # history just before the window is not counted (it would change the mean here)
        slow_before = [s if s.mono >= oldest else sample(s.mono, s.batches, s.inference_ms * 10)
                       for s in samples]
        assert baseline_latency_ms(slow_before, 195.0, settings) == pytest.approx(3.0)


def test_no_baseline_with_too_little_history() -> None:
    assert baseline_latency_ms([], 100.0, SETTINGS) is None
    assert baseline_latency_ms([sample(100.0, 50, 500.0)], 100.0, SETTINGS) is None  # one sample
    few = [sample(90.0, 50, 500.0), sample(100.0, 50 + MIN_LATENCY_BATCHES - 1, 600.0)]
    assert baseline_latency_ms(few, 100.0, SETTINGS) is None
    enough = [sample(90.0, 50, 500.0), sample(100.0, 50 + MIN_LATENCY_BATCHES, 600.0)]
    assert baseline_latency_ms(enough, 100.0, SETTINGS) == pytest.approx(100.0 / MIN_LATENCY_BATCHES)
    idle = [sample(90.0, 50, 500.0), sample(100.0, 50, 500.0)]  # no batch at all (no camera)
    assert baseline_latency_ms(idle, 100.0, SETTINGS) is None


# -- next_backoff -------------------------------------------------------------------------------


def backoffs(settings: RolloutSettings, count: int) -> list[float]:
    delays = [settings.backoff_initial_s]
    while len(delays) < count:
        delays.append(next_backoff(delays[-1], settings))
    return delays


def test_backoff_doubles_up_to_its_cap() -> None:
    settings = RolloutSettings(poll_interval_s=300.0, backoff_initial_s=2.0, backoff_max_s=60.0)
    assert backoffs(settings, 8) == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_backoff_is_capped_by_the_poll_interval_but_never_below_the_first_delay() -> None:
    assert backoffs(RolloutSettings(poll_interval_s=10.0, backoff_max_s=300.0), 6) == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoffs(RolloutSettings(poll_interval_s=1.0, backoff_initial_s=2.0), 3) == [2.0, 2.0, 2.0]


# -- decide_check --------------------------------------------------------------------------------


def state(**fields: Any) -> ModelState:
    """Version 1 (D1) serving, plus `fields`."""
    return ModelState(**{"serving_version": 1, "serving_digest": D1, "installed": {1: D1}, **fields})


def test_the_serving_digest_is_up_to_date_whatever_else_is_recorded() -> None:
    for forced in (False, True):
        decision = decide_check(D1, state(bad={D1: "x"}), forced=forced, version_present=True)
        assert decision.action is Check.UP_TO_DATE and decision.version is None and not decision.retry_bad


def test_a_known_bad_digest_is_skipped_unless_an_operator_asks() -> None:
    bad = state(bad={D2: "validation failed"})
    assert decide_check(D2, bad, forced=False, version_present=False).action is Check.SKIP_BAD
    assert decide_check(D2, bad, forced=False, version_present=True).action is Check.SKIP_BAD
    retried = decide_check(D2, bad, forced=True, version_present=False)
    assert retried.action is Check.INSTALL and retried.retry_bad
    installed = state(bad={D2: "rolled back"}, installed={1: D1, 2: D2})
    again = decide_check(D2, installed, forced=True, version_present=True)
    assert (again.action, again.version, again.retry_bad) == (Check.VALIDATE, 2, True)


def test_an_installed_version_is_validated_when_its_folder_is_still_there() -> None:
    installed = state(installed={1: D1, 2: D2})
    decision = decide_check(D2, installed, forced=False, version_present=True)
    assert (decision.action, decision.version, decision.retry_bad) == (Check.VALIDATE, 2, False)
    gone = decide_check(D2, installed, forced=False, version_present=False)  # folder removed or incomplete
    assert (gone.action, gone.version, gone.retry_bad) == (Check.INSTALL, None, False)


def test_an_unknown_digest_is_installed() -> None:
    for current in (state(), ModelState()):  # something serving, or nothing yet
        decision = decide_check(D3, current, forced=False, version_present=False)
        assert (decision.action, decision.version, decision.retry_bad) == (Check.INSTALL, None, False)
    # version_present describes the recorded folder: without a record there is nothing to validate
    assert decide_check(D3, state(), forced=True, version_present=True).action is Check.INSTALL


# -- install_failure -----------------------------------------------------------------------------


def test_a_digest_mismatch_is_retried_until_it_keeps_happening() -> None:
    error = DigestMismatch("blob sha256:… hashed to sha256:…")
    for failures in range(1, DIGEST_RETRIES):
        assert install_failure(error, failures).permanent is False
    final = install_failure(error, DIGEST_RETRIES)
    assert final.permanent and final.reason == str(error) and not final.unexpected


def test_registry_problems_are_retried_artifact_problems_are_not() -> None:
    down = install_failure(RegistryError("registry reg.example:5000 unreachable"), 0)
    assert (down.permanent, down.unexpected) == (False, False) and "unreachable" in down.reason
    for error in (ArtifactError("layer too large"), ModelInstallError("no labels.txt")):
        failure = install_failure(error, 0)
        assert (failure.permanent, failure.reason, failure.unexpected) == (True, str(error), False)
    bug = install_failure(OSError(28, "No space left on device"), 0)
    assert (bug.permanent, bug.unexpected) == (False, True) and bug.reason.startswith("OSError: ")


# -- stale_version (rollback protection) --------------------------------------------------------


def test_newer_versions_and_the_accepted_build_pass() -> None:
    assert stale_version(ModelState(), 1, D1, 0.0) is None  # nothing accepted yet
    accepted = ModelState(highest_version=3, highest_digest=D3)
    assert stale_version(accepted, 4, D1, 0.0) is None
    assert stale_version(accepted, 3, D3, 0.0) is None


def test_older_versions_and_other_builds_are_refused_with_the_command_that_allows_them() -> None:
    accepted = ModelState(highest_version=3, highest_digest=D3)
    older = stale_version(accepted, 2, D2, 0.0)
    assert older is not None and "version 2 is older than version 3" in older
    assert f"edgectl trust sign rollback --version 2 --digest {D2}" in older
    rebuilt = stale_version(accepted, 3, D1, 0.0)
    assert rebuilt is not None and "another build" in rebuilt and D1[:19] in rebuilt


def test_a_signed_rollback_allows_exactly_its_version_and_digest_until_it_expires() -> None:
    accepted = ModelState(highest_version=3, highest_digest=D3,
                          rollback_allowed={D2: {"version": 2, "expires": 500.0, "counter": 7}})
    assert stale_version(accepted, 2, D2, 499.0) is None
    expired = stale_version(accepted, 2, D2, 500.0)
    assert expired is not None and "its signed rollback document expired" in expired
    other_version = stale_version(accepted, 1, D2, 0.0)
    assert other_version is not None and "older than version 3" in other_version
    assert stale_version(accepted, 2, D1, 0.0) is not None  # another digest: not allowed


# -- judge_channel / channel_expired --------------------------------------------------------------


def statement(issued_at: float, expires: float, digest: str = D2) -> ChannelStatement:
    return ChannelStatement("models/colour", "stable", digest, 2, issued_at, expires, "key")


def test_a_channel_never_signed_needs_no_statement() -> None:
    verdict = judge_channel("stable", None, None, D2, 100.0)
    assert (verdict.status, verdict.record, verdict.problem) == (ChannelStatus.UNSIGNED, None, False)


def test_a_fresh_statement_is_recorded() -> None:
    verdict = judge_channel("stable", None, statement(90.0, 200.0), D2, 100.0)
    assert verdict.status is ChannelStatus.FRESH and not verdict.problem and verdict.reason is None
    assert verdict.record == {"digest": D2, "version": 2, "issued_at": 90.0, "expires": 200.0,
                              "status": "fresh", "reason": None}
    seen = verdict.record
    assert judge_channel("stable", seen, statement(90.0, 200.0), D2, 150.0).status is ChannelStatus.FRESH  # same one


def test_expired_missing_and_replayed_statements_are_problems() -> None:
    seen = {"digest": D2, "version": 2, "issued_at": 90.0, "expires": 200.0, "status": "fresh", "reason": None}
    expired = judge_channel("stable", seen, statement(95.0, 150.0), D2, 150.0)
    assert expired.status is ChannelStatus.EXPIRED and expired.problem
    assert expired.record is not None and expired.record["issued_at"] == 95.0 and "re-sign" in str(expired.reason)
    missing = judge_channel("stable", seen, None, D3, 100.0)
    assert missing.status is ChannelStatus.MISSING and missing.problem
    assert missing.record == {**seen, "status": "missing", "reason": missing.reason}
    assert D3[:19] in str(missing.reason)
    replayed = judge_channel("stable", seen, statement(80.0, 500.0), D2, 100.0)
    assert replayed.status is ChannelStatus.REPLAYED and replayed.problem and "older than one already seen" in str(
        replayed.reason)
    assert replayed.record is not None and replayed.record["issued_at"] == 90.0  # the newer one is kept


def test_without_the_registry_only_the_clock_judges_the_last_statement() -> None:
    seen = {"digest": D2, "issued_at": 90.0, "expires": 200.0, "status": "fresh"}
    assert channel_expired("stable", None, 1000.0) is None
    assert channel_expired("stable", seen, 199.0) is None
    verdict = channel_expired("stable", seen, 200.0)
    assert verdict is not None and verdict.status is ChannelStatus.EXPIRED and verdict.problem
    assert verdict.record == {**seen, "status": "expired", "reason": verdict.reason}
    assert "cannot be reached" in str(verdict.reason)
    assert channel_expired("stable", verdict.record, 300.0) is None  # already recorded as expired
