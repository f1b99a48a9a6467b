"""The installer (digest -> version folder) against a real docker-registry; cleanup and pruning
(the state file it writes: tests/unit/test_models_state.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.errors import ModelInstallError
from edge.models.state import STATE_FILE, ModelState, StateStore
from edge.rollout.installer import STAGING, ModelInstaller
from edge.util.ociref import Reference
from provisioning.publish import push_version
from tests.support.packages import fake_version_folder, package_colour


@pytest.fixture
def pushed(registry, colour_packages):
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
                                                                 colour_packages) -> None:
    client, refs = pushed
    base = tmp_path / "store" / "colour"
    store = StateStore(base)
    installer = ModelInstaller(base, client, store)
    state = store.load()
    installer.install(refs["good2"][0], state)
    # Another build that also calls itself version 2.
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
        fake_version_folder(base, v)
    store = StateStore(base)
    state = ModelState(serving_version=1, previous_version=2, installed={v: f"d{v}" for v in (1, 2, 3, 4, 5)})
    removed = ModelInstaller(base, None, store, puller=lambda *a, **k: None).prune(state, keep=3)
    assert removed == [3, 4]
    assert sorted(p.name for p in base.iterdir() if p.name.isdigit()) == ["1", "2", "5"]
    assert sorted(state.installed) == [1, 2, 5]
