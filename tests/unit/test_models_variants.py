"""Per-platform variants: containerd's platform normalisation and matching, accelerator preference,
the portable fallback, and the channel-statement judgement (freeze detection) as pure functions."""
from __future__ import annotations

import pytest

from edge.errors import ArtifactError
from edge.models.artifact.channel import ChannelStatement
from edge.models.artifact.variants import pick_variant
from edge.rollout.policy import ChannelStatus, channel_expired, judge_channel
from edge.util.platforms import Platform, compatible, normalize, parse_platform

M = "application/vnd.oci.image.manifest.v1+json"


def entry(name: str, platform: dict | None = None, accelerator: str | None = None, media_type: str = M) -> dict:
    doc: dict = {"mediaType": media_type, "digest": "sha256:" + name * 64, "size": 1}
    if platform is not None:
        doc["platform"] = platform
    if accelerator:
        doc["annotations"] = {"dev.edge.model.accelerator": accelerator}
    return doc


INDEX = {"manifests": [
    entry("0", {"os": "unknown", "architecture": "unknown"}),  # a buildx attestation: never picked
    entry("1", {"os": "linux", "architecture": "arm64", "variant": "v8"}, "edgetpu"),
    entry("2", {"os": "linux", "architecture": "amd64"}, "cuda"),
    entry("3", {"os": "linux", "architecture": "arm", "variant": "v7"}),
    entry("4", {"os": "linux", "architecture": "amd64"}),
    entry("5"),  # portable
    entry("6", {"os": "linux", "architecture": "arm64"}, media_type="application/vnd.example.unknown"),
]}


@pytest.mark.parametrize("text, expected", [
    ("linux/x86_64", "linux/amd64"), ("linux/aarch64", "linux/arm64"), ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm", "linux/arm/v7"), ("linux/armhf", "linux/arm/v7"), ("Linux/AMD64/v1", "linux/amd64"),
    ("linux/amd64/v3", "linux/amd64/v3"), ("macos/arm64", "darwin/arm64"),
])
def test_platforms_normalise_as_containerd_does(text: str, expected: str) -> None:
    assert str(parse_platform(text)) == expected


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/amd64/v3/x", "linux/AMD 64", ""])
def test_bad_platforms_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="os/architecture"):
        parse_platform(text)


def test_what_a_machine_runs() -> None:
    assert compatible(normalize("linux", "aarch64"))[:2] == [Platform("linux", "arm64"), Platform("linux", "arm", "v8")]
    assert compatible(normalize("linux", "armv7l")) == [Platform("linux", "arm", f"v{n}") for n in (7, 6, 5)]
    assert compatible(normalize("linux", "x86_64")) == [Platform("linux", "amd64"), Platform("linux", "386")]


@pytest.mark.parametrize("machine, accelerators, picked", [
    ("x86_64", (), "4"),  # the amd64 CPU variant, before the portable one
    ("x86_64", ("cuda",), "2"),  # an accelerator the device has wins
    ("x86_64", ("edgetpu",), "4"),  # an accelerator for another platform does not
    ("aarch64", ("edgetpu",), "1"),
    ("aarch64", (), "3"),  # arm64 runs arm/v7 code: closer than the portable variant
    ("armv6l", (), "5"),  # arm/v7 is too new for a v6 CPU: the portable variant
    ("riscv64", ("cuda",), "5"),
])
def test_picking_a_variant(machine: str, accelerators: tuple[str, ...], picked: str) -> None:
    choice = pick_variant(INDEX, normalize("linux", machine), accelerators, "reg/m@sha256:i")
    assert choice.descriptor["digest"] == "sha256:" + picked * 64
    if picked == "5":
        assert choice.describe() == {"manifest": "sha256:" + "5" * 64, "platform": None, "accelerator": None}


def test_no_usable_variant_is_one_clear_line() -> None:
    index = {"manifests": [entry("1", {"os": "linux", "architecture": "arm64"}), entry("2", None, "cuda")]}
    with pytest.raises(ArtifactError) as info:
        pick_variant(index, normalize("linux", "x86_64"), (), "reg/m@sha256:i")
    assert str(info.value) == ("reg/m@sha256:i: no variant for this device (linux/amd64, accelerators none); the index "
                               "offers linux/arm64, portable (cuda): push a portable variant (no platform) or one for "
                               "this platform")
    for bad in ({}, {"manifests": []}, {"manifests": "x"}):
        with pytest.raises(ArtifactError, match="must list its manifests"):
            pick_variant(bad, normalize("linux", "x86_64"), (), "w")


def statement(issued: float, expires: float, digest: str = "sha256:" + "a" * 64) -> ChannelStatement:
    return ChannelStatement("models/m", "stable", digest, 3, issued, expires, "hint")


def test_channel_statements_are_judged_fresh_expired_missing_or_replayed() -> None:
    key, now = "reg/models/m:stable", 1_000_000.0
    digest = "sha256:" + "a" * 64
    assert judge_channel(key, None, None, digest, now).status is ChannelStatus.UNSIGNED  # never signed: not required
    fresh = judge_channel(key, None, statement(now - 10, now + 100), digest, now)
    assert fresh.status is ChannelStatus.FRESH and not fresh.problem and fresh.record["issued_at"] == now - 10
    seen = fresh.record
    expired = judge_channel(key, seen, statement(now - 10, now - 1), digest, now)
    assert expired.status is ChannelStatus.EXPIRED and expired.problem and "expired at" in expired.reason
    replayed = judge_channel(key, seen, statement(now - 20, now + 100), digest, now)
    assert replayed.status is ChannelStatus.REPLAYED and "older than one already seen" in replayed.reason
    assert replayed.record["issued_at"] == seen["issued_at"]  # the newer one stays the floor
    missing = judge_channel(key, seen, None, "sha256:" + "b" * 64, now)
    assert missing.status is ChannelStatus.MISSING and "no signed channel statement" in missing.reason
    assert judge_channel(key, seen, statement(now - 5, now + 50), digest, now).status is ChannelStatus.FRESH
    assert channel_expired(key, seen, now) is None
    late = channel_expired(key, seen, now + 101)
    assert late is not None and late.status is ChannelStatus.EXPIRED and "cannot be reached" in late.reason
