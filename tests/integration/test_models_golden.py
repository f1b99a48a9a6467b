"""edge.models.golden on packaged versions: the golden images and their reference travel with the
package, and the bad variants the rollout tests use differ from the good one only in the model."""
from __future__ import annotations

from pathlib import Path

from edge.models.golden import load_golden


def test_packaged_variants_differ_only_in_the_model(colour_packages: dict[str, Path]) -> None:
    good = load_golden(colour_packages["good1"])
    assert [g.file for g in good] == ["blue.png", "green.png", "red.png"]
    assert [g.top1 for g in good] == [2, 1, 0]
    assert [g.top1 for g in load_golden(colour_packages["permuted"])] == [2, 1, 0]
    assert load_golden(colour_packages["nogolden"]) == []
