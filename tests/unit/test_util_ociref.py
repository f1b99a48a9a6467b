"""edge.util.ociref: OCI references parsed and printed back, and refused with a clear message."""
from __future__ import annotations

import re

import pytest

from edge.util.ociref import Reference


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5000/models/classifier:stable", Reference("127.0.0.1:5000", "models/classifier", tag="stable")),
    ("registry.example.com/a/b/c", Reference("registry.example.com", "a/b/c")),
    ("localhost/m:3", Reference("localhost", "m", tag="3")),
    ("127.0.0.1:5000/m@sha256:" + "a" * 64, Reference("127.0.0.1:5000", "m", digest="sha256:" + "a" * 64)),
])
def test_reference_parse_and_str(text: str, expected: Reference) -> None:
    ref = Reference.parse(text)
    assert ref == expected
    assert str(ref) == text


@pytest.mark.parametrize("text, fragment", [
    ("models/classifier:3", "not a registry host"),
    ("127.0.0.1:5000", "expected host:port/repository"),
    ("http://127.0.0.1:5000/m:1", "scheme"),
    ("127.0.0.1:5000/Models:1", "repository 'Models' is invalid"),
    ("127.0.0.1:5000/m:bad/tag", "repository"),
    ("127.0.0.1:5000/m:-x", "tag '-x' is invalid"),
    ("127.0.0.1:5000/m@sha256:abc", "digest must be sha256"),
])
def test_reference_parse_refuses_with_clear_message(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Reference.parse(text)
