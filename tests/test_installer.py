"""Model state file (atomic, recoverable) and the installer against a real docker-registry."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.errors import ModelInstallError
from edge.models.state import STATE_FILE, ModelState, StateStore, choose_serving, recover
from edge.rollout.installer import STAGING, ModelInstaller
from edge.util.ociref import Reference
from provisioning.model import push_version
from tests.test_rollout_support import colour_packages  # noqa: F401 - fixture


def _fake_version(base: Path, version: int) -> Path:
    folder = base / str(version)
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"x")
    return folder


def test_state_roundtrip_and_torn_write_is_ignored(tmp_path: Path) -> None:
    base = tmp_path / "colour"
    store = StateStore(base)
    state = ModelState(state="serving", serving_version=2, serving_digest="sha256:" + "b" * 64,
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
        _fake_version(base, v)
    (base / STATE_FILE).write_text("{not json")
    state = recover(StateStore(base).load(), base)
    assert state.serving_version is None
    assert choose_serving(state, base).version == 2  # hand-placed folders are trusted


def test_recovery_serves_recorded_version_not_newest(tmp_path: Path) -> None:
    base = tmp_path / "colour"
    for v in (1, 2, 3):
        _fake_version(base, v)
    state = ModelState(state="validating", serving_version=2, serving_digest="sha256:" + "b" * 64,
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
    store.save(ModelState(state="serving", serving_version=1))
    before = store.path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.save(ModelState(state="downloading", serving_version=1))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in base.iterdir()] == [STATE_FILE]


@pytest.fixture
def pushed(registry, colour_packages):  # noqa: F811
    client = registry.client()
    refs = {}
    for key in ("good1", "good2", "permuted"):
        ref = Reference.parse(f"{registry.address}/models/colour:{key}")
        digest, _ = push_version(client, ref, colour_packages[key])
        refs[key] = (ref, digest)
    return client, refs


def test_install_moves_a_complete_version_in_and_records_it(tmp_path: Path, pushed) -> None:
    client, refs = pushed
    base = tmp_path / "store" / "colour"
    store = StateStore(base)
    installer = ModelInstaller(base, client, store)
    installer.cleanup()
    state = store.load()
    ref, digest = refs["good2"]
    assert installer.resolve(ref) == digest
    installed = installer.install(ref, state)
    assert installed.version == 2 and installed.digest == digest
    assert (base / "2" / "saved_model.pb").is_file()
    assert list((base / STAGING).iterdir()) == []
    saved = json.loads((base / STATE_FILE).read_text())
    assert saved["installed"] == {"2": digest} and saved["installing"] is None


def test_install_refuses_same_version_number_with_another_digest(tmp_path: Path, pushed, registry,
                                                                 colour_packages) -> None:  # noqa: F811
    client, refs = pushed
    base = tmp_path / "store" / "colour"
    store = StateStore(base)
    installer = ModelInstaller(base, client, store)
    state = store.load()
    installer.install(refs["good2"][0], state)
    # Another build that also calls itself version 2.
    from tests.test_rollout_support import package_colour

    other = package_colour(tmp_path / "other2", 2, "permuted")
    ref = Reference.parse(f"{registry.address}/models/colour:other2")
    digest, _ = push_version(client, ref, other)
    assert digest != refs["good2"][1]
    with pytest.raises(ModelInstallError, match=r"version 2 is already installed with digest sha256:.*new version number"):
        installer.install(ref, state)
    assert state.installed == {2: refs["good2"][1]}
    assert list((base / STAGING).iterdir()) == []


def test_install_refuses_another_models_artifact(tmp_path: Path, pushed) -> None:
    client, refs = pushed
    base = tmp_path / "store" / "other-model"
    installer = ModelInstaller(base, client, StateStore(base))
    with pytest.raises(ModelInstallError, match="is model 'colour'; this device serves 'other-model'"):
        installer.install(refs["good1"][0], ModelState())
    assert not any(p.name.isdigit() for p in base.iterdir())


def test_cleanup_removes_interrupted_unpacks_keeps_partial_downloads(tmp_path: Path) -> None:
    base = tmp_path / "colour"
    staging = base / STAGING
    (staging / ".colour-3-abc" / "variables").mkdir(parents=True)
    (staging / ".layer-1234.tar.gz.part").write_bytes(b"partial")
    (base / ".trash-2-99").mkdir(parents=True)
    ModelInstaller(base, client=None, state_store=StateStore(base), puller=lambda *a, **k: None).cleanup()
    assert sorted(p.name for p in staging.iterdir()) == [".layer-1234.tar.gz.part"]
    assert not (base / ".trash-2-99").exists()


def test_prune_keeps_serving_and_previous(tmp_path: Path) -> None:
    base = tmp_path / "colour"
    for v in (1, 2, 3, 4, 5):
        _fake_version(base, v)
    store = StateStore(base)
    state = ModelState(serving_version=1, previous_version=2, installed={v: f"d{v}" for v in (1, 2, 3, 4, 5)})
    removed = ModelInstaller(base, None, store, puller=lambda *a, **k: None).prune(state, keep=3)
    assert removed == [3, 4]
    assert sorted(p.name for p in base.iterdir() if p.name.isdigit()) == ["1", "2", "5"]
    assert sorted(state.installed) == [1, 2, 5]
