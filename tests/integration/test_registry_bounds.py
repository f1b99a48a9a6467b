"""Downloads are bounded in size and time (TUF's endless-data and slow-retrieval attacks).

A small OCI registry on loopback that answers the manifest and config honestly and then misbehaves
on the model layer: trickles it a byte at a time (never tripping a socket timeout), stalls it,
sends more than the manifest declared, or sends a manifest that never ends. Each download is
refused within a bound that follows from `registry.timeout_s`, with a message saying why, and an
interrupted download resumes from where it stopped.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge.errors import RegistryError, StaleVersionError, UnsafeArtifact
from edge.models.artifact.format import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, OCI_MANIFEST, pack_version
from edge.models.artifact.pull import pull_model
from edge.rollout.policy import install_failure
from edge.transport.bounded import MIN_RATE_BYTES_PER_S
from edge.transport.oci import MAX_MANIFEST_BYTES, RegistryClient
from edge.util.ociref import Reference, sha256_digest
from tests.support.packages import make_version

TIMEOUT_S = 1.0
REPO = "models/fake"


class HostileRegistry:
    """Serves one model artifact; `layer_mode` decides how the layer blob is sent."""

    def __init__(self, tmp_path: Path) -> None:
        folder = make_version(tmp_path / "version", version=3)
        self.layer = tmp_path / "layer.tar.gz"
        config = pack_version(folder, self.layer)
        self.layer_bytes = self.layer.read_bytes()
        self.config_raw = json.dumps(config, sort_keys=True).encode()
        self.manifest_raw = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": sha256_digest(self.config_raw),
                       "size": len(self.config_raw)},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": sha256_digest(self.layer_bytes),
                        "size": len(self.layer_bytes)}]}).encode()
        self.digest = sha256_digest(self.manifest_raw)
        self.layer_mode = "honest"
        self.manifest_mode = "honest"
        self.ranges: list[str | None] = []
        self.stop = threading.Event()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                registry.answer(self, head=True)

            def do_GET(self) -> None:
                registry.answer(self, head=False)

            def log_message(self, fmt: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def answer(self, request: BaseHTTPRequestHandler, head: bool) -> None:
        path = request.path
        if path.startswith(f"/v2/{REPO}/manifests/"):
            if self.manifest_mode == "endless" and not head:
                request.send_response(200)
                request.send_header("Content-Type", OCI_MANIFEST)
                request.end_headers()  # no length: read until the connection closes, which never happens
                self._send(request, iter(lambda: b" " * 65536, None))
                return
            self._reply(request, self.manifest_raw, OCI_MANIFEST, head, {"Docker-Content-Digest": self.digest})
        elif path == f"/v2/{REPO}/blobs/{sha256_digest(self.config_raw)}":
            self._reply(request, self.config_raw, "application/octet-stream", head)
        elif path == f"/v2/{REPO}/blobs/{sha256_digest(self.layer_bytes)}":
            self._layer(request, head)
        else:
            self._reply(request, b'{"errors": []}', "application/json", head, status=404)

    def _reply(self, request: BaseHTTPRequestHandler, body: bytes, kind: str, head: bool,
               headers: dict[str, str] | None = None, status: int = 200) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        if not head:
            request.wfile.write(body)

    def _layer(self, request: BaseHTTPRequestHandler, head: bool) -> None:
        data, start = self.layer_bytes, 0
        asked = request.headers.get("Range")
        self.ranges.append(asked)
        if asked and self.layer_mode == "honest":
            start = int(asked.split("=", 1)[1].split("-", 1)[0])
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            request.send_response(200)
        if self.layer_mode != "endless":
            request.send_header("Content-Length", str(len(data) - start))
        request.end_headers()
        if head:
            return
        if self.layer_mode == "honest":
            self._send(request, iter([data[start:]]))
        elif self.layer_mode == "trickle":  # one byte every 0.1 s: no single read ever waits TIMEOUT_S
            self._send(request, (data[i:i + 1] for i in range(len(data))), pause_s=0.1)
        elif self.layer_mode == "stall":  # a good start, then nothing
            self._send(request, iter([data[:50_000]]))
            self.stop.wait(60)
        elif self.layer_mode == "endless":  # more than the manifest declared, for ever
            self._send(request, iter(lambda: data, None))

    def _send(self, request: BaseHTTPRequestHandler, pieces: Iterator[bytes], pause_s: float = 0.0) -> None:
        try:
            for piece in pieces:
                if self.stop.is_set():
                    return
                request.wfile.write(piece)
                request.wfile.flush()
                if pause_s:
                    time.sleep(pause_s)
        except OSError:
            pass  # the client gave up: what we want

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[HostileRegistry]:
    registry = HostileRegistry(tmp_path)
    yield registry
    registry.close()


def pull(registry: HostileRegistry, staging: Path, max_bytes: int = 64 << 20) -> float:
    """Pull the artifact by tag; returns how long it took."""
    client = RegistryClient(registry.address, insecure=True, timeout_s=TIMEOUT_S)
    started = time.monotonic()
    try:
        pull_model(client, Reference.parse(f"{registry.address}/{REPO}:3"), staging, max_bytes=max_bytes)
    finally:
        client.close()
    return time.monotonic() - started


def test_a_registry_that_trickles_the_layer_is_cut_off_and_the_download_resumes(hostile, tmp_path: Path) -> None:
    hostile.layer_mode = "trickle"
    started = time.monotonic()
    with pytest.raises(RegistryError, match="slow retrieval") as caught:
        pull(hostile, tmp_path / "staging")
    assert time.monotonic() - started < 5 * TIMEOUT_S  # not the hours a 200 kB trickle would take
    assert f"at least {MIN_RATE_BYTES_PER_S} bytes/s" in str(caught.value)
    assert not install_failure(caught.value, 1).permanent  # the registry's fault: retried later, model kept
    parts = list((tmp_path / "staging").glob("*.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 0 < kept < len(hostile.layer_bytes)
    hostile.layer_mode = "honest"
    pull(hostile, tmp_path / "staging")
    assert hostile.ranges[-1] == f"bytes={kept}-"  # resumed from what the trickle had delivered
    assert any(p.name.startswith(".pull-") for p in (tmp_path / "staging").iterdir())


def test_a_registry_that_stalls_the_layer_times_out_and_the_download_resumes(hostile, tmp_path: Path) -> None:
    hostile.layer_mode = "stall"
    with pytest.raises(RegistryError, match="interrupted at byte 50000") as caught:
        took = pull(hostile, tmp_path / "staging")
        raise AssertionError(f"pulled in {took}s")
    assert not install_failure(caught.value, 1).permanent
    hostile.layer_mode = "honest"
    pull(hostile, tmp_path / "staging")
    assert hostile.ranges[-1] == "bytes=50000-"  # resumed, not downloaded again


def test_endless_data_is_cut_at_the_declared_size(hostile, tmp_path: Path) -> None:
    hostile.layer_mode = "endless"
    started = time.monotonic()
    with pytest.raises(RegistryError, match=f"sent more than the {len(hostile.layer_bytes)} bytes announced"):
        pull(hostile, tmp_path / "staging")
    assert time.monotonic() - started < 10 * TIMEOUT_S
    assert all(p.stat().st_size <= len(hostile.layer_bytes) for p in (tmp_path / "staging").glob("*.part"))


def test_an_endless_manifest_is_cut_at_the_manifest_limit(hostile, tmp_path: Path) -> None:
    hostile.manifest_mode = "endless"
    with pytest.raises(RegistryError, match=f"larger than {MAX_MANIFEST_BYTES} bytes"):
        pull(hostile, tmp_path / "staging")


def test_a_layer_declared_over_max_mb_is_refused_before_downloading(hostile, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArtifact, match="over the 1000-byte limit"):
        pull(hostile, tmp_path / "staging", max_bytes=1000)
    assert hostile.ranges == []  # not one byte of the layer was asked for


def test_stale_versions_are_permanent_failures() -> None:
    failure = install_failure(StaleVersionError("rollback refused: version 1 is older than version 3"), 1)
    assert failure.permanent and "rollback refused" in failure.reason
