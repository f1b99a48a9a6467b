"""The one acceptance rule (edge.models.golden.compare_scores) with a declared int8 rule, and edge.json `acceptance`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelMetadataError
from edge.models.golden import compare_scores
from edge.models.metadata import Acceptance, read_version_metadata


def scores(*pairs: tuple[int, float], classes: int = 10) -> np.ndarray:
    out = np.full(classes, 0.01, np.float32)
    for index, value in pairs:
        out[index] = value
    return out


def test_exact_rule_refuses_a_flip_and_a_large_difference() -> None:
    ref = scores((3, 0.6), (5, 0.3))
    assert compare_scores("a", ref, ref, tolerance=1e-3).problem is None
    flipped = compare_scores("a", scores((3, 0.3), (5, 0.6)), ref, tolerance=1e-3)
    assert flipped.problem == "a: top-1 class 5 != reference 3" and flipped.top1_agrees is False
    moved = compare_scores("a", scores((3, 0.58), (5, 0.3)), ref, tolerance=1e-3)
    assert moved.problem.startswith("a: max abs diff 0.02 > tolerance") and moved.top1_agrees is True


def test_declared_margin_accepts_a_flip_only_on_a_close_call_within_the_top_5() -> None:
    close = scores((3, 0.22), (5, 0.175), (7, 0.1))  # the reference's top-1 leads by 0.045
    check = compare_scores("astronaut", scores((3, 0.17), (5, 0.21), (7, 0.1)), close, tolerance=0.3, top1_margin=0.1)
    assert check.problem is None and check.top1_agrees is False  # accepted, and counted as a disagreement
    clear = scores((3, 0.6), (5, 0.2))
    refused = compare_scores("cat", scores((3, 0.2), (5, 0.6)), clear, tolerance=0.5, top1_margin=0.1)
    assert refused.problem == "cat: top-1 class 5 != reference 3"
    outside_top5 = scores((0, 0.2), (1, 0.19), (2, 0.18), (3, 0.17), (4, 0.16), (9, 0.02))
    far = compare_scores("x", scores((9, 0.3), (0, 0.1)), outside_top5, tolerance=0.5, top1_margin=0.1)
    assert far.problem == "x: top-1 class 9 != reference 0"


def write_edge_json(tmp_path: Path, doc: dict) -> Path:
    (tmp_path / "assets.extra").mkdir(exist_ok=True)
    (tmp_path / "assets.extra" / "edge.json").write_text(json.dumps({"format": 1, **doc}))
    return tmp_path


def test_acceptance_declared_forbidden_and_absent(tmp_path: Path) -> None:
    meta = read_version_metadata(write_edge_json(tmp_path, {"acceptance": {"int8": {"tolerance": 0.3,
                                                                                       "top1_margin": 0.1}}}))
    assert meta.rule_for("int8") == Acceptance(tolerance=0.3, top1_margin=0.1, min_top1_agreement=1.0)
    assert read_version_metadata(write_edge_json(tmp_path, {"acceptance": {"int8": False}})).rule_for("int8") is None
    assert read_version_metadata(write_edge_json(tmp_path, {})).rule_for("int8") is None


@pytest.mark.parametrize("acceptance, message", [
    ({"int4": {"tolerance": 0.3}}, "acceptance: unknown precision(s) ['int4']"),
    ({"int8": {"top1_margin": 0.1}}, "acceptance.int8 must be false or an object with 'tolerance'"),
    ({"int8": {"tolerance": 2}}, "acceptance.int8.tolerance must be a number between 0 and 1"),
    ({"int8": {"tolerance": 0.3, "min_top1_agreement": "all"}}, "acceptance.int8.min_top1_agreement must be"),
    ({"int8": {"tolerance": 0.3, "margin": 0.1}}, "acceptance.int8: unknown key(s) ['margin']"),
    ("int8", "'acceptance' must be an object"),
])
def test_bad_acceptance_is_refused_naming_the_key(tmp_path: Path, acceptance, message: str) -> None:
    with pytest.raises(ModelMetadataError) as raised:
        read_version_metadata(write_edge_json(tmp_path, {"acceptance": acceptance}))
    assert message in str(raised.value)
