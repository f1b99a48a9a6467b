"""Helpers for console tests: the `[console]` TOML, a cycling-colour camera, HTTP and /metrics readers.

- `console_section(port, **keys)`: the `[console]` table (enabled, on 127.0.0.1:port).
- `colour_cycle_frames(per_colour)`: red, green, blue frames in turn, so the label changes each second.
- `get(url, **kw)`: a `requests` GET with a 10 s timeout (verify=False for self-signed HTTPS).
- `metric_values(text)`: {(name, (("label", "value"), ...)): value} of a Prometheus text exposition.
- `COLOUR_OF_LABEL`: the colour model's label for a pixel's dominant channel.
- `is_blank(png)`: True when an image is (almost) one flat colour.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import requests
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from tests.support.config import toml_value
from tests.support.frames import BLUE, GREEN, RED, solid_frames

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

CHANNEL_LABEL = {0: "red", 1: "green", 2: "blue"}  # RGB channel index -> colour model label


def console_section(port: int, **keys: Any) -> str:
    lines = ["[console]", "enabled = true", f"port = {port}"]
    lines += [f"{key} = {toml_value(str(value) if isinstance(value, Path) else value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def colour_cycle_frames(per_colour: int = 10, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    for colour in (RED, GREEN, BLUE):
        frames += solid_frames(colour, count=per_colour, size=size)
    return frames


def get(url: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", 10)
    kwargs.setdefault("verify", False)
    return requests.get(url, **kwargs)


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return values


def dominant_label(rgb: tuple[int, int, int] | list[int]) -> str:
    return CHANNEL_LABEL[int(np.argmax(np.asarray(rgb[:3])))]


def is_blank(png: Path) -> bool:
    image = cv2.imread(str(png))
    if image is None:
        return True
    colours = np.unique(image.reshape(-1, 3), axis=0)
    return len(colours) < 50 or float(image.std()) < 5.0
