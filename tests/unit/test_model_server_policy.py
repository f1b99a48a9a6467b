"""edge-model-server's version policy on its own: which versions are aspired, and the next load or
unload that keeps a version available (no models, no threads)."""
from __future__ import annotations

import pytest

from edge.model_server import All, Latest, Specific, aspired_versions
from edge.model_server.policy import Action, next_action


def test_aspired_versions_policies() -> None:
    found = [124, 7, 123]
    assert aspired_versions(Latest(), found) == [124]
    assert aspired_versions(Latest(2), found) == [123, 124]
    assert aspired_versions(Latest(5), found) == [7, 123, 124]
    assert aspired_versions(All(), found) == [7, 123, 124]
    assert aspired_versions(Specific((123, 999)), found) == [123]
    assert aspired_versions(Latest(), []) == []
    with pytest.raises(ValueError):
        Latest(0)


def test_next_action_preserves_availability() -> None:
    # New version aspired, old one serving: load the new first.
    assert next_action({2}, {1: "available", 2: "new"}) == Action("load", 2)
    # New one available: now the old one may go.
    assert next_action({2}, {1: "available", 2: "available"}) == Action("unload", 1)
    # New one failed: the old one stays.
    assert next_action({2}, {1: "available", 2: "end"}) is None
    # All versions gone from disk: keep the last one serving, unload the extra ones lowest first.
    assert next_action(set(), {1: "available"}) is None
    assert next_action(set(), {1: "available", 2: "available"}) == Action("unload", 1)
    # Several new versions: highest first.
    assert next_action({1, 2, 3}, {1: "new", 2: "new", 3: "new"}) == Action("load", 3)
