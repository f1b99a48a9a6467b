"""Rollout validation of a candidate version on its golden images, against the serving version
(real TensorFlow models from the colour packages)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.models.store import ModelVersion
from edge.rollout.validation import validate
from edge.serving.embedded import EmbeddedClassifier


def load(folder: Path, version: int = 1) -> EmbeddedClassifier:
    return EmbeddedClassifier(ModelVersion("colour", version, folder))


@pytest.fixture(scope="module")
def current(colour_packages):
    return load(colour_packages["good1"], 1)


def test_validation_accepts_a_good_version(colour_packages, current) -> None:
    report = validate(load(colour_packages["good2"], 2), colour_packages["good2"], current, 1e-3, 2.0)
    assert report.ok, report.reasons
    assert report.images == 3 and report.max_abs_diff <= 1e-3
    assert report.median_ms > 0 and report.current_median_ms > 0


@pytest.mark.parametrize("variant, expected", [
    ("permuted", r"golden image blue.png: top-1 class 0 != reference 2"),
    ("nan", r"golden image blue.png: output has NaN/Inf values"),
    ("nogolden", r"no golden images in assets.extra/golden/ \(rollout.require_golden = true\)"),
])
def test_validation_refuses(colour_packages, current, variant: str, expected: str) -> None:
    report = validate(load(colour_packages[variant], 4), colour_packages[variant], current, 1e-3, 2.0)
    assert not report.ok
    assert re.search(expected, report.reason), report.reason


def test_validation_refuses_a_slow_candidate_and_accepts_missing_golden_when_allowed(
        colour_packages, current) -> None:
    report = validate(load(colour_packages["good2"], 2), colour_packages["good2"], current, 1e-3, 0.001)
    assert not report.ok and report.reason.startswith("too slow: median latency"), report.reason
    report = validate(load(colour_packages["nogolden"], 6), colour_packages["nogolden"], current, 1e-3, 2.0,
                      require_golden=False)
    assert report.ok, report.reasons
