"""`edgectl snapshot DEVICE CAMERA -o FILE.jpg` against the real gateway over a real Mosquitto."""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from tests.fixtures.gateway import COMMAND_DEVICE
from tests.support.console import dominant_label
from tests.support.processes import edgectl

pytestmark = pytest.mark.slow


def test_snapshot_is_written_as_a_jpeg_with_its_labels_and_errors_are_one_line(
        command_gateway, mosquitto, tmp_path: Path) -> None:
    gw, _req, _recorder = command_gateway
    out = tmp_path / "shots" / "green.jpg"
    out.parent.mkdir()
    done = edgectl("snapshot", COMMAND_DEVICE, "green-cam", "-o", out, "--broker", mosquitto.url, "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{out}: ") and f"{COMMAND_DEVICE}/green-cam frame " in done.stdout
    assert "128x96: green 1.00" in done.stdout, done.stdout  # the camera's configured size, top label and score
    image = cv2.imread(str(out))
    assert image is not None and image.shape[:2] == (96, 128)
    assert dominant_label(image[80, 64][::-1].tolist()) == "green"  # BGR -> RGB; below the drawn labels
    assert (out.stat().st_mode & 0o777) == 0o644

    unknown = edgectl("snapshot", COMMAND_DEVICE, "back-door", "-o", tmp_path / "x.jpg", "--broker", mosquitto.url,
                      "--timeout", "20")
    assert unknown.returncode == 1 and "unknown camera 'back-door'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.jpg").exists()
    wrong_suffix = edgectl("snapshot", COMMAND_DEVICE, "red-cam", "-o", tmp_path / "x.png", "--broker", mosquitto.url)
    assert wrong_suffix.returncode == 2 and "name the file .jpg" in wrong_suffix.stderr
    absent = edgectl("snapshot", "no-such-device", "red-cam", "-o", tmp_path / "y.jpg", "--broker", mosquitto.url,
                     "--timeout", "2")
    assert absent.returncode == 1 and "no reply from no-such-device" in absent.stderr
    assert gw.alive()
