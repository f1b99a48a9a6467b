"""The model store: numeric version folders, and clear errors for what is not one."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ModelStoreError
from edge.models.store import ModelStore


def test_store_resolves_numeric_versions(tmp_path: Path) -> None:
    for name in ("00000123", "7", ".staging-9", "124.partial", "notes"):
        (tmp_path / "m" / name).mkdir(parents=True)
        (tmp_path / "m" / name / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "m" / "200").mkdir()  # numeric but empty: not servable
    store = ModelStore(tmp_path)
    assert [v.version for v in store.versions("m")] == [7, 123]
    assert store.resolve("m").version == 123
    assert store.resolve("m", 7).path.name == "7"
    with pytest.raises(ModelStoreError, match=r"version 8 not found.*\[7, 123\]"):
        store.resolve("m", 8)


def test_store_explains_savedmodel_in_base_path(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(ModelStoreError, match=r"numeric version folder.*m/1/"):
        ModelStore(tmp_path).resolve("m")
    with pytest.raises(ModelStoreError, match="does not exist"):
        ModelStore(tmp_path).resolve("absent")
