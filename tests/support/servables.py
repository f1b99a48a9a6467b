"""edge-model-server's ServableManager on TF Serving's own test models (copied into tmp dirs), and the
settings of the server the hostile suites talk to."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edge.model_server import ServableManager, ServableState
from tests.support.paths import TFSERVING_TESTDATA

TWO_VERSIONS = "saved_model_half_plus_two_2_versions"

# the `hostile_model_server` fixture: half_plus_two (TF1) as `default`: serving_default x float [-1,1] -> y,
# classify_x_to_y, regress_x_to_y; --rest_api_max_body_bytes, --rest_api_read_timeout_seconds
HOSTILE_MODEL = "default"
HOSTILE_MAX_BODY = 1 << 20
HOSTILE_READ_TIMEOUT_S = 3


def copy_model(tmp_path: Path, name: str, dest: str | None = None) -> Path:
    target = tmp_path / (dest or name)
    shutil.copytree(TFSERVING_TESTDATA / name, target)
    return target


def add_version(base: Path, version: int, like: int) -> Path:
    """Copy version ``like`` to ``version`` the way an installer does: stage hidden, then rename."""
    staging = base / f".staging-{version}"
    shutil.copytree(base / f"{like:08d}", staging)
    final = base / str(version)
    os.rename(staging, final)
    return final


def x(*values: float) -> np.ndarray:
    """half_plus_two's input: one row per value."""
    return np.array([[v] for v in values], dtype=np.float32)


def predict(manager: ServableManager, name: str, value: float = 2.0, **kw: Any) -> tuple[int, float]:
    """(version that answered, y) for one x."""
    with manager.acquire(name, **kw) as servable:
        return servable.version, float(servable.run({"x": x(value)})["y"][0][0])


def states(manager: ServableManager, name: str) -> dict[int, ServableState]:
    return {s.version: s.state for s in manager.statuses(name)}
