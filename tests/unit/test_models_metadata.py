"""Version metadata: assets.extra/edge.json checks, preprocess overrides and labels."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.errors import ModelMetadataError
from edge.models.metadata import PreprocessSpec, parse_edge_json, read_version_metadata


@pytest.mark.parametrize(
    "doc, message",
    [
        ([], "top level must be an object"),
        ({"preprocess": {"color": "YUV"}}, "preprocess.color"),
        ({"preprocess": {"std": [1, 0, 1]}}, "std must not contain 0"),
        ({"preprocess": {"mean": [1, 2]}}, "preprocess.mean"),
        ({"output": {"activation": "sigmoid"}}, "output.activation"),
        ({"bogus": 1}, "unknown key"),
    ],
)
def test_edge_json_errors(doc, message: str) -> None:
    with pytest.raises(ModelMetadataError, match=message):
        parse_edge_json(doc)


def test_metadata_override_and_labels(tmp_path: Path) -> None:
    extra = tmp_path / "assets.extra"
    extra.mkdir()
    (extra / "edge.json").write_text(json.dumps({"preprocess": {"mean": 127, "std": 128},
                                                 "output": {"name": "p", "activation": "softmax"}}))
    (extra / "labels.txt").write_text("cat\ndog\n\n")
    meta = read_version_metadata(tmp_path, PreprocessSpec(color="BGR"))
    assert meta.labels == ("cat", "dog")
    assert meta.preprocess.color == "BGR" and meta.preprocess.mean == (127.0,) * 3
    assert meta.output_name == "p" and meta.activation == "softmax"
    (extra / "edge.json").write_text("{not json")
    with pytest.raises(ModelMetadataError, match="not valid JSON"):
        read_version_metadata(tmp_path)
