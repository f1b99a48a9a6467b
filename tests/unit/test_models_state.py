"""The model state file (atomic, recoverable) and choosing the version to serve from it and the disk."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.models.state import STATE_FILE, ModelState, RolloutState, StateStore, choose_serving, recover
from tests.support.packages import fake_version_folder


def test_state_roundtrip_and_torn_write_is_ignored(tmp_path: Path) -> None:
    base = tmp_path / "colour"
    store = StateStore(base)
    state = ModelState(state=RolloutState.SERVING, serving_version=2, serving_digest="sha256:" + "b" * 64,
                       previous_version=1, previous_digest="sha256:" + "a" * 64,
                       installed={1: "sha256:" + "a" * 64, 2: "sha256:" + "b" * 64},
                       bad={"sha256:" + "c" * 64: "validation failed"}, validated=["sha256:" + "b" * 64])
    store.save(state)
    before = store.path.read_bytes()
    # A write killed after the temp file was created but before the rename: a torn temp file.
    torn = base / f"{STATE_FILE}.tmp-deadbeef"
    torn.write_bytes(b'{"format": 1, "state": "down')
    loaded = store.load()
    assert loaded.to_json() == {**state.to_json(), "updated_at": loaded.updated_at}
    assert not torn.exists() and store.path.read_bytes() == before
    assert [p.name for p in base.iterdir()] == [STATE_FILE]


def test_corrupt_state_file_falls_back_to_disk(tmp_path: Path) -> None:
    base = tmp_path / "colour"
    for v in (1, 2):
        fake_version_folder(base, v)
    (base / STATE_FILE).write_text("{not json")
    state = recover(StateStore(base).load(), base)
    assert state.serving_version is None
    assert choose_serving(state, base).version == 2  # hand-placed folders are trusted


def test_recovery_serves_recorded_version_not_newest(tmp_path: Path) -> None:
    base = tmp_path / "colour"
    for v in (1, 2, 3):
        fake_version_folder(base, v)
    state = ModelState(state=RolloutState.VALIDATING, serving_version=2, serving_digest="sha256:" + "b" * 64,
                       installed={1: "sha256:" + "a" * 64, 2: "sha256:" + "b" * 64},
                       installing={"version": 3, "digest": "sha256:" + "c" * 64},
                       validated=["sha256:" + "a" * 64, "sha256:" + "b" * 64])
    state = recover(state, base)
    assert state.installed[3] == "sha256:" + "c" * 64  # renamed in before the record: adopted
    assert state.installing is None and state.state == "serving"
    assert choose_serving(state, base).version == 2
    # recorded serving folder gone: newest *validated* wins, never the unvalidated v3
    import shutil

    shutil.rmtree(base / "2")
    state = recover(state, base)
    assert choose_serving(state, base).version == 1


def test_state_save_is_atomic_under_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash inside the write (here: os.replace failing) leaves the old file intact and no temp."""
    import os

    base = tmp_path / "colour"
    store = StateStore(base)
    store.save(ModelState(state=RolloutState.SERVING, serving_version=1))
    before = store.path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.save(ModelState(state=RolloutState.DOWNLOADING, serving_version=1))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in base.iterdir()] == [STATE_FILE]
