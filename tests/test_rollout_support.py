"""Artifacts and small real parts shared by the rollout, installer and gateway-rollout tests.

- `package_colour(out, version, variant=...)`: a packaged version folder of the colour test model
  (``edgectl model package``'s `package()`, with golden red/green/blue images and their reference).
  Bad variants keep the GOOD model's golden reference but swap in another SavedModel:
  ``permuted`` (classes rotated: red -> "green"), ``nan`` (outputs NaN); ``nogolden`` has none.
- `SolidCamera`: a frame-source slot for `FrameBatcher` that serves a solid colour at a fixed rate.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from camera.frames import Frame
from tests.fixtures.models import COLOUR_GAIN, COLOUR_SIZE, build_colour_model

RED, GREEN, BLUE = (0, 0, 230), (0, 230, 0), (230, 0, 0)  # BGR


def write_golden_images(folder: Path) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for name, bgr in (("red.png", RED), ("green.png", GREEN), ("blue.png", BLUE)):
        image = np.zeros((48, 48, 3), dtype=np.uint8)
        image[:, :] = bgr
        cv2.imwrite(str(folder / name), image)
    return folder


def _build_variant(saved: Path, variant: str) -> None:
    """A colour-shaped SavedModel (same signature) that answers differently."""
    import keras

    from tools.savedmodel_export import export_serving

    image = keras.Input(shape=(COLOUR_SIZE, COLOUR_SIZE, 3), dtype="uint8", name="image")
    means = keras.layers.GlobalAveragePooling2D()(keras.ops.cast(image, "float32"))
    dense = keras.layers.Dense(3)
    model = keras.Model(image, dense(means))
    kernel = (COLOUR_GAIN / 255.0) * (2.0 * np.eye(3) - np.ones((3, 3)))
    if variant == "permuted":
        kernel = kernel[:, [2, 0, 1]]  # red scores as "green", green as "blue", blue as "red"
    elif variant == "nan":
        kernel = np.full((3, 3), np.nan)
    else:
        raise ValueError(variant)
    dense.set_weights([kernel.astype(np.float32), np.zeros(3, dtype=np.float32)])
    export_serving(model, saved, "image", [None, COLOUR_SIZE, COLOUR_SIZE, 3], "uint8", "logits")


def package_colour(out: Path, version: int, variant: str = "good", name: str = "colour") -> Path:
    """A packaged version folder at `out` (see the module docstring for the variants)."""
    from provisioning.model import package

    with tempfile.TemporaryDirectory(prefix="colour-src-") as tmp:
        tmp_path = Path(tmp)
        saved = build_colour_model(tmp_path / "saved")
        golden = None if variant == "nogolden" else write_golden_images(tmp_path / "golden")
        package(saved, out, name=name, version=version, golden=golden, output_name="logits",
                activation="softmax", force=True)
        if variant not in ("good", "nogolden"):
            bad = tmp_path / "bad"
            _build_variant(bad, variant)
            (out / "saved_model.pb").unlink()
            shutil.rmtree(out / "variables")
            shutil.copyfile(bad / "saved_model.pb", out / "saved_model.pb")
            shutil.copytree(bad / "variables", out / "variables")
    return out


_PACKAGES: dict[str, Path] = {}


@pytest.fixture(scope="session")
def colour_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Packaged folders: good1, good2, good3 (versions 1-3), permuted (v4), nan (v5), nogolden (v6).
    Built once per test run (modules that import this fixture share the cache)."""
    if not _PACKAGES:
        root = tmp_path_factory.mktemp("colour-packages")
        for key, version, variant in (("good1", 1, "good"), ("good2", 2, "good"), ("good3", 3, "good"),
                                      ("permuted", 4, "permuted"), ("nan", 5, "nan"), ("nogolden", 6, "nogolden")):
            _PACKAGES[key] = package_colour(root / key, version, variant)
    return dict(_PACKAGES)


class SolidCamera:
    """A `FrameBatcher` slot: a solid-colour frame every `interval_s` (newest wins, like a camera slot)."""

    def __init__(self, name: str, bgr: tuple[int, int, int], interval_s: float = 0.01) -> None:
        self._name = name
        self._image = np.zeros((64, 64, 3), dtype=np.uint8)
        self._image[:, :] = bgr
        self._interval_s = interval_s
        self._next = time.monotonic()
        self._number = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def rois(self) -> tuple:
        return ()

    def set_transform(self, transform: object) -> None:
        """No preprocessing in this test slot: the pipeline preprocesses on its own thread."""

    def take(self, timeout_s: float = 0.0) -> Frame | None:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return None
            self._next = now + self._interval_s
            self._number += 1
            return Frame(self._name, self._number, self._image, time.time(), now)


def start_ticker(frame_ready: threading.Event, interval_s: float, stop: threading.Event) -> threading.Thread:
    """Set `frame_ready` every `interval_s` (what capture threads do when a frame lands in a slot)."""
    def run() -> None:
        while not stop.wait(interval_s):
            frame_ready.set()

    thread = threading.Thread(target=run, name="frame-ticker", daemon=True)
    thread.start()
    return thread


def test_packaged_variants_differ_only_in_the_model(colour_packages: dict[str, Path]) -> None:
    from edge.models.golden import load_golden

    good = load_golden(colour_packages["good1"])
    assert [g.file for g in good] == ["blue.png", "green.png", "red.png"]
    assert [g.top1 for g in good] == [2, 1, 0]
    assert [g.top1 for g in load_golden(colour_packages["permuted"])] == [2, 1, 0]
    assert load_golden(colour_packages["nogolden"]) == []
