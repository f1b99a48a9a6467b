"""Helpers for artifact tests: what third-party tools and attackers put into a registry.

- `subject_of(client, repo, digest)`: the descriptor a referrer names as its subject.
- `attach_bundle(client, repo, digest, bundle)`: what `oras attach --artifact-type <bundle type>` does.
- `push_cosign_signature(client, repo, digest)`: a cosign-style signature under `sha256-<hex>.sig`.
- `tamper(client, repo, digest, title, data)`: the manifest with one file layer replaced, re-pushed
  under a new digest, with the original signature bundle copied onto it (a registry that swaps content).
- `attach_statement(client, repo, digest, key, issued, lifetime_s)`: a channel statement for `stable`
  issued at a chosen time (what `edgectl model promote --lifetime` attaches, back- or fast-dated).
- `oras_client(registry)`: oras-py against the loopback registry (Basic auth when it has one).
- `model_signing_cli(...)`: the real `model_signing` CLI next to this Python.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge.models.artifact.channel import referrer_manifest, sign_channel
from edge.models.artifact.format import TITLE
from edge.models.artifact.modelsig import BUNDLE_MEDIA_TYPE
from edge.transport.oci import OCI_MANIFEST
from edge.util.ociref import sha256_digest
from provisioning.publish import attach

MODEL_SIGNING = Path(sys.executable).with_name("model_signing")


def subject_of(client: Any, repo: str, digest: str) -> dict[str, Any]:
    doc, _, raw = client.get_manifest(repo, digest)
    return {"mediaType": doc.get("mediaType", OCI_MANIFEST), "digest": digest, "size": len(raw)}


def attach_bundle(client: Any, repo: str, digest: str, bundle: bytes) -> str:
    return attach(client, repo, subject_of(client, repo, digest), BUNDLE_MEDIA_TYPE, bundle, BUNDLE_MEDIA_TYPE, {},
                  "model.sig")


def bundles_of(client: Any, repo: str, digest: str) -> list[bytes]:
    found = []
    for descriptor in client.referrers(repo, digest, BUNDLE_MEDIA_TYPE):
        manifest = client.get_manifest(repo, descriptor["digest"])[0]
        found.append(client.fetch_blob(repo, manifest["layers"][0]["digest"]))
    return found


def push_cosign_signature(client: Any, repo: str, digest: str) -> str:
    """The shape cosign writes (simple signing payload, signature in an annotation) under `.sig`."""
    payload = json.dumps({"critical": {"identity": {"docker-reference": f"{client.registry}/{repo}"},
                                       "image": {"docker-manifest-digest": digest},
                                       "type": "cosign container image signature"}, "optional": None}).encode()
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload)]}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": client.push_blob(repo, config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                            "digest": client.push_blob(repo, payload), "size": len(payload),
                            "annotations": {"dev.cosignproject.cosign/signature":
                                            base64.b64encode(b"\x30\x45not-checked-here").decode()}}]}
    tag = digest.replace(":", "-") + ".sig"
    client.push_manifest(repo, tag, manifest)
    return tag


def tamper(client: Any, repo: str, digest: str, title: str, data: bytes, tag: str) -> str:
    """Replace the file layer `title` of manifest `digest` by `data`, push as `tag`, copy the signature."""
    manifest = client.get_manifest(repo, digest)[0]
    layer = next(layer for layer in manifest["layers"] if layer["annotations"][TITLE] == title)
    layer.update(digest=client.push_blob(repo, data), size=len(data))
    new = client.push_manifest(repo, tag, manifest)
    for bundle in bundles_of(client, repo, digest):
        attach_bundle(client, repo, new, bundle)
    return new


def attach_statement(client: Any, repo: str, digest: str, key: Any, issued: float, lifetime_s: float,
                     channel: str = "stable") -> str:
    bundle, expires = sign_channel(key, repo, channel, digest, 1, lifetime_s, now=issued)
    manifest = referrer_manifest(client.push_blob(repo, bundle), len(bundle), client.push_blob(repo, b"{}"),
                                 subject_of(client, repo, digest), channel, expires, issued)
    return str(client.push_referrer(repo, manifest))


def oras_client(registry: Any) -> Any:
    import oras.client  # third-party test client (oras-py); only these tests need it

    client = oras.client.OrasClient(hostname=registry.address, insecure=True,
                                    auth_backend="basic" if registry.auth == "basic" else "token")
    if registry.username:
        client.login(username=registry.username, password=registry.password, hostname=registry.address)
    return client


def model_signing_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODEL_SIGNING), *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=cwd, check=False)
