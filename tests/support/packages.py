"""Model packages for rollout tests (the `colour_packages` fixture builds them once per session).

- `package_colour(out, version, variant=...)`: a packaged version folder of the colour test model
  (``edgectl model package``'s `package()`, with golden red/green/blue images and their reference).
  Bad variants keep the GOOD model's golden reference but swap in another SavedModel:
  ``permuted`` (classes rotated: red -> "green"), ``nan`` (outputs NaN); ``nogolden`` has none.
- `build_colour_variant(saved, variant)`: just the SavedModel of a bad variant.
- `make_version(folder)`: a version folder that packs like a real one, without TensorFlow.
- `fake_version_folder(base, version)`: `base/<version>/saved_model.pb` (a servable-looking folder).
- `push(registry, tag, folder, key)`: push a packaged folder as `models/colour:<tag>` (signed when
  a private key file is given); returns the manifest digest.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.models.artifact.signing import load_model_private_key
from edge.util.ociref import Reference
from provisioning.modelpack import package
from provisioning.publish import push_version
from tests.support.frames import BLUE, GREEN, RED
from tests.support.models import COLOUR_SIZE, build_colour_model, colour_kernel

PACKAGE_VARIANTS = (("good1", 1, "good"), ("good2", 2, "good"), ("good3", 3, "good"),
                    ("permuted", 4, "permuted"), ("nan", 5, "nan"), ("nogolden", 6, "nogolden"))


def write_golden_images(folder: Path) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for name, bgr in (("red.png", RED), ("green.png", GREEN), ("blue.png", BLUE)):
        image = np.zeros((48, 48, 3), dtype=np.uint8)
        image[:, :] = bgr
        cv2.imwrite(str(folder / name), image)
    return folder


def build_colour_variant(saved: Path, variant: str) -> Path:
    """A colour-shaped SavedModel (same signature) that answers differently."""
    import keras  # heavy (TensorFlow): only when a package is built

    from tools.savedmodel_export import export_serving

    image = keras.Input(shape=(COLOUR_SIZE, COLOUR_SIZE, 3), dtype="uint8", name="image")
    means = keras.layers.GlobalAveragePooling2D()(keras.ops.cast(image, "float32"))
    dense = keras.layers.Dense(3)
    model = keras.Model(image, dense(means))
    dense.set_weights([colour_kernel(variant).astype(np.float32), np.zeros(3, dtype=np.float32)])
    export_serving(model, saved, "image", [None, COLOUR_SIZE, COLOUR_SIZE, 3], "uint8", "logits")
    return saved


def package_colour(out: Path, version: int, variant: str = "good", name: str = "colour") -> Path:
    """A packaged version folder at `out` (see the module docstring for the variants)."""
    with tempfile.TemporaryDirectory(prefix="colour-src-") as tmp:
        tmp_path = Path(tmp)
        saved = build_colour_model(tmp_path / "saved")
        golden = None if variant == "nogolden" else write_golden_images(tmp_path / "golden")
        package(saved, out, name=name, version=version, golden=golden, output_name="logits",
                activation="softmax", force=True)
        if variant not in ("good", "nogolden"):
            bad = tmp_path / "bad"
            build_colour_variant(bad, variant)
            (out / "saved_model.pb").unlink()
            shutil.rmtree(out / "variables")
            shutil.copyfile(bad / "saved_model.pb", out / "saved_model.pb")
            shutil.copytree(bad / "variables", out / "variables")
    return out


def make_version(folder: Path, name: str = "fake", version: int = 3) -> Path:
    """A version folder that packs like a real one (no TensorFlow needed)."""
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(os.urandom(3000))
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(200_000))
    (folder / "variables" / "variables.index").write_bytes(b"index")
    (folder / "assets.extra").mkdir()
    (folder / "assets.extra" / "labels.txt").write_text("a\nb\n")
    (folder / "assets.extra" / "model.json").write_text(json.dumps({
        "format": 1, "name": name, "version": version,
        "input": {"name": "image", "dtype": "uint8", "shape": [-1, 8, 8, 3]},
        "outputs": {"scores": {"dtype": "float32", "shape": [-1, 2]}}, "labels": 2, "golden": 0,
        "created": "2026-01-01T00:00:00Z", "source": "test"}))
    return folder


def fake_version_folder(base: Path, version: int) -> Path:
    """`base/<version>/` with a placeholder saved_model.pb: what the store counts as a version."""
    folder = base / str(version)
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"x")
    return folder


def push(registry: Any, tag: str, folder: Path, key: Path | None) -> str:
    """Push a packaged version folder as `<registry>/models/colour:<tag>`; returns the digest."""
    client = registry.client()
    ref = Reference.parse(f"{registry.address}/models/colour:{tag}")
    return push_version(client, ref, folder, private_key=load_model_private_key(key) if key else None)[0]
