"""Downloads are bounded in time and size, seen from the running gateway (TUF's slow-retrieval and
endless-data attacks): real TLS + ACL Mosquitto, real docker-registry, real gateway process.

The device's registry is the real docker-registry behind a loopback proxy
(tests/support/registry_proxy.py) that trickles, stalls, or never ends the new version's biggest
layer (or its manifest). Each download is cut off with `model_install_failed` naming why
(`slow retrieval`, `interrupted at byte`, `sent more than the N bytes announced`, `larger than N
bytes`), as a registry failure (`permanent: false`, retried with backoff); version 1 keeps serving,
and results from it keep flowing while the download is held open and after it is cut. Once the
registry answers properly again the download resumes from the bytes already on disk (HTTP Range)
and version 2 installs, validates and serves. The integration tests
(tests/integration/test_registry_bounds.py) show the same bounds at the client, against a
hand-written registry.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config.patch import to_toml
from edge.transport.oci import MAX_MANIFEST_BYTES
from tests.support.packages import push
from tests.support.registry_proxy import FAST_BYTES, RegistryProxy
from tests.support.trust_fleet import TrustFleet
from tests.support.waits import wait_until

DEVICE = "gw-bounds"
TIMEOUT_S = 2.0  # registry.timeout_s: the slow-retrieval window and the socket timeout
PADDING = "assets.extra/padding.bin"
TITLE = "org.opencontainers.image.title"


@pytest.fixture
def fleet(tmp_path: Path, colour_packages: dict[str, Path]) -> Iterator[TrustFleet]:
    fleet = TrustFleet.build(tmp_path, colour_packages, DEVICE)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def proxy(fleet: TrustFleet) -> Iterator[RegistryProxy]:
    """The proxy in front of the fleet's registry; the device's config reads the registry through it."""
    proxy = RegistryProxy(fleet.registry.address)
    try:
        doc = fleet.config_doc()
        doc["registry"].update(ref=f"{proxy.address}/models/colour:stable", timeout_s=TIMEOUT_S)
        fleet.config_path.write_text(to_toml(doc))
        yield proxy
    finally:
        proxy.close()


def serving_v1(fleet: TrustFleet) -> str:
    """Version 1 on the channel, installed through the (honest) proxy, serving with results."""
    d1 = fleet.push("stable", "good1")
    fleet.start_gateway()
    fleet.wait_serving(1)
    fleet.results_flow(1)
    return d1


def padded_v2(fleet: TrustFleet) -> tuple[str, dict[str, Any]]:
    """Version 2 with a 1 MiB file, pushed under the tag `2` (not yet on the channel): its digest and
    the padding file's layer."""
    folder = fleet.workdir / "v2-padded"
    shutil.copytree(fleet.packages["good2"], folder)
    (folder / PADDING).write_bytes(os.urandom(1 << 20))
    digest = push(fleet.registry, "2", folder, fleet.keys["model"])
    with fleet.registry.client() as client:
        manifest = client.get_manifest("models/colour", digest)[0]
    layer = next(layer for layer in manifest["layers"] if layer.get("annotations", {}).get(TITLE) == PADDING)
    return digest, layer


def partial_download(fleet: TrustFleet, layer: dict[str, Any]) -> Path:
    """Where the gateway keeps the bytes of `layer` it has so far (tests/integration shows the naming)."""
    return fleet.workdir / "store/colour/.staging" / f".blob-{layer['digest'].split(':')[1]}.part"


def seq_of(event: dict[str, Any]) -> int:
    return int(event["seq"])


def results_between(fleet: TrustFleet, low: int, high: int) -> dict[str, list[int]]:
    """The model versions of each camera's results with low < seq < high."""
    out: dict[str, list[int]] = {"red-cam": [], "blue-cam": []}
    for doc in sorted(fleet.docs("results/#"), key=lambda d: d["seq"]):
        if low < doc["seq"] < high:
            out.setdefault(doc["camera"], []).append(doc["model"]["version"])
    return out


def assert_v1_served_between(fleet: TrustFleet, low: int, high: int) -> None:
    by_camera = results_between(fleet, low, high)
    assert all(len(v) >= 3 and set(v) == {1} for v in by_camera.values()), {c: v[-10:] for c, v in by_camera.items()}


def cut_off(fleet: TrustFleet, digest: str, reason: str, after_seq: int = 0, nth: int = 1) -> dict[str, Any]:
    """The `nth` `model_install_failed` for `digest` after `after_seq` whose reason says `reason`; it is a
    registry failure (retried, the digest not marked bad) and version 1 still serves."""
    def found() -> list[dict[str, Any]]:
        events = [e for e in fleet.events("model_install_failed")
                  if e["digest"] == digest and reason in e["reason"] and e["seq"] > after_seq]
        return events[nth - 1:nth]

    event = wait_until(found, 60, interval_s=0.1, message=f"model_install_failed #{nth} for {digest[:19]}: {reason}")[0]
    assert event["permanent"] is False and event["retry_in_s"] > 0, event
    model = fleet.docs("model")[-1]
    assert model["serving"]["version"] == 1 and digest not in model["bad"], model
    return event


def installs_v2(fleet: TrustFleet, d2: str) -> None:
    seq = fleet.last_seq()
    fleet.wait_event("model_switched", version=2, digest=d2, timeout_s=120)
    fleet.results_flow(2, after_seq=seq)
    fleet.wait_event("model_probation_passed", version=2, digest=d2, timeout_s=120)
    assert fleet.docs("model")[-1]["serving"] == {"version": 2, "digest": d2}
    assert fleet.gateway is not None and fleet.gateway.alive()


def test_a_registry_that_trickles_or_stalls_a_layer_is_cut_off_while_v1_serves_and_the_download_resumes(
        fleet: TrustFleet, proxy: RegistryProxy) -> None:
    d1 = serving_v1(fleet)
    d2, layer = padded_v2(fleet)
    proxy.misbehave("trickle", {layer["digest"]})
    assert push(fleet.registry, "stable", fleet.workdir / "v2-padded", fleet.keys["model"]) == d2

    # slow retrieval: a fast start, then 256 bytes/s (a byte every 1/8 s: no socket timeout fires)
    started = fleet.wait_event("model_download_started", digest=d2)
    event = cut_off(fleet, d2, "slow retrieval")
    assert "at least 1024 bytes/s wanted" in event["reason"] and layer["digest"] in event["reason"]
    assert_v1_served_between(fleet, seq_of(started), seq_of(event))  # while the trickle held the download open
    assert fleet.docs("model")[-1]["serving"] == {"version": 1, "digest": d1}
    part = partial_download(fleet, layer)
    assert FAST_BYTES <= part.stat().st_size < layer["size"]  # what arrived is kept
    fleet.results_flow(1)

    # a stall: the resumed download gets a good start, then nothing; cut by the socket timeout
    proxy.misbehave("stall", {layer["digest"]})
    event = cut_off(fleet, d2, "interrupted at byte", after_seq=seq_of(event))
    assert "timed out" in event["reason"] and "resumes from there" in event["reason"], event
    fleet.results_flow(1, after_seq=seq_of(event))
    stalled = [s for s in proxy.seen(layer["digest"]) if s.mode == "stall"]
    assert stalled and stalled[0].range is not None  # the stall met a resumed download

    # the registry answers properly again: the download resumes from the bytes on disk and v2 installs
    proxy.heal()
    installs_v2(fleet, d2)
    healed = [s for s in proxy.seen(layer["digest"]) if s.mode == "pass"]
    assert len(healed) == 1 and healed[0].status == 206, healed
    assert healed[0].range is not None
    offset = int(healed[0].range.removeprefix("bytes=").rstrip("-"))
    assert offset >= 2 * FAST_BYTES and offset + healed[0].sent == layer["size"]  # only the rest was sent
    assert not part.exists()


def test_endless_data_from_the_registry_is_cut_off_while_v1_serves(fleet: TrustFleet, proxy: RegistryProxy) -> None:
    d1 = serving_v1(fleet)
    d2, layer = padded_v2(fleet)

    # a manifest that never ends
    proxy.misbehave("endless", {d2})
    assert push(fleet.registry, "stable", fleet.workdir / "v2-padded", fleet.keys["model"]) == d2
    started = fleet.wait_event("model_download_started", digest=d2)
    event = cut_off(fleet, d2, f"manifest models/colour@{d2} is larger than {MAX_MANIFEST_BYTES} bytes")

    # a layer that goes on past the size its manifest declares, for ever
    proxy.misbehave("endless", {layer["digest"]})
    event = cut_off(fleet, d2, f"sent more than the {layer['size']} bytes announced", after_seq=seq_of(event), nth=2)
    assert_v1_served_between(fleet, seq_of(started), seq_of(event))  # throughout the attack
    assert fleet.docs("model")[-1]["serving"] == {"version": 1, "digest": d1}
    assert partial_download(fleet, layer).stat().st_size <= layer["size"]  # nothing kept beyond the declared size
    assert not (fleet.workdir / "store/colour/2").exists()
    endless = [s for s in proxy.seen(layer["digest"]) if s.mode == "endless"]
    assert endless and all(s.sent > layer["size"] for s in endless if s.done)  # it did send more, every time
    fleet.results_flow(1)

    # a registry that behaves again: v2 installs (the failures were the registry's, not the artifact's)
    proxy.heal()
    installs_v2(fleet, d2)
