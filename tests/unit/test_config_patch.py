"""edge.config.patch: JSON merge patches by camera name, and the TOML the patched config is saved as."""
from __future__ import annotations

import sys

from edge.config.patch import apply_patch, to_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_merge_patch_by_camera_name_and_toml_round_trip() -> None:
    doc = {"device_id": "a", "cameras": [{"name": "front", "source": "x.mp4", "fps": 5.0,
                                          "rois": [{"name": "door", "x": 1, "y": 2, "w": 3, "h": 4}]},
                                         {"name": "back", "source": "y.mp4"}],
           "model": {"name": "m", "preprocess": {"mean": [1.0, 2.0, 3.0]}}, "mqtt": {"url": "mqtt://h"}}
    out = apply_patch(doc, {"cameras": {"back": {"fps": 1, "size": [64, 48]}, "front": {"rois": None}},
                            "mqtt": None, "results": {"publish": "on_change"}})
    assert out["cameras"] == [{"name": "front", "source": "x.mp4", "fps": 5.0},
                              {"name": "back", "source": "y.mp4", "fps": 1, "size": [64, 48]}]
    assert "mqtt" not in out and out["results"] == {"publish": "on_change"} and doc["mqtt"] == {"url": "mqtt://h"}
    assert tomllib.loads(to_toml(out)) == out
    assert tomllib.loads(to_toml(doc)) == doc
    replaced = apply_patch(doc, {"cameras": [{"name": "only", "source": "z.mp4"}]})
    assert replaced["cameras"] == [{"name": "only", "source": "z.mp4"}]
