"""Standard tools against edge's model artifacts, on a real docker-registry 2.8 (it has no referrers API).

- oras-py pulls a version `edgectl model push` wrote into the version folder's files, and the real
  `model_signing` CLI verifies that folder with the signature edge attached;
- the signature is found the way `oras discover` finds it: the referrers API answers 404, the
  `sha256-<hex>` tag holds the referrers index;
- a version pushed with oras-py the documented way and signed with the `model_signing` CLI installs;
- a cosign-style `sha256-<hex>.sig` tag on the same digest changes nothing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import requests

from edge.models.artifact.format import CONFIG_MEDIA_TYPE, DESCRIPTION_FILE, TITLE
from edge.models.artifact.modelsig import BUNDLE_MEDIA_TYPE
from edge.models.artifact.pull import pull_model
from edge.models.artifact.signing import load_model_private_key, load_model_public_key
from edge.transport.oci import is_attachment_tag, referrers_tag
from edge.util.ociref import Reference
from provisioning.cli import main
from provisioning.pki.keys import generate_keys
from provisioning.publish import attach, push_version
from tests.support.artifacts import (
    attach_bundle,
    bundles_of,
    model_signing_cli,
    oras_client,
    push_cosign_signature,
    subject_of,
)
from tests.support.packages import make_version

REPO = "models/fake"


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def keys(tmp_path: Path) -> tuple[Path, Path]:
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"


def test_oras_pulls_the_titled_files_and_model_signing_verifies_them(registry, tmp_path: Path) -> None:
    version = make_version(tmp_path / "fake" / "3")
    private, public = keys(tmp_path)
    client = registry.client()
    digest, referrer = push_version(client, Reference.parse(f"{registry.address}/{REPO}:3"), version,
                                    private_key=load_model_private_key(private))
    manifest = client.get_manifest(REPO, digest)[0]
    assert sorted(layer["annotations"][TITLE] for layer in manifest["layers"]) == sorted(files_of(version))
    assert manifest["config"]["digest"] == next(layer["digest"] for layer in manifest["layers"]
                                                if layer["annotations"][TITLE] == DESCRIPTION_FILE)

    written = oras_client(registry).pull(target=f"{registry.address}/{REPO}:3", outdir=str(tmp_path / "pulled"))
    assert len(written) == len(manifest["layers"])
    assert files_of(tmp_path / "pulled") == files_of(version)

    (tmp_path / "model.sig").write_bytes(bundles_of(client, REPO, digest)[0])
    done = model_signing_cli("verify", "key", tmp_path / "pulled", "--signature", tmp_path / "model.sig",
                             "--public_key", public)
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stderr
    assert referrer is not None and referrer.startswith("sha256:")


def test_the_signature_is_found_through_the_referrers_tag(registry, tmp_path: Path) -> None:
    private, _ = keys(tmp_path)
    client = registry.client()
    digest, referrer = push_version(client, Reference.parse(f"{registry.address}/{REPO}:1"),
                                    make_version(tmp_path / "v", version=1), private_key=load_model_private_key(private))
    api = requests.get(f"http://{registry.address}/v2/{REPO}/referrers/{digest}", timeout=10)
    assert api.status_code == 404  # distribution 2.8: no referrers API, so the tag schema is used
    assert referrers_tag(digest) in client.list_tags(REPO)
    found = client.referrers(REPO, digest)
    assert [(d["digest"], d["artifactType"]) for d in found] == [(referrer, BUNDLE_MEDIA_TYPE)]
    assert found[0]["annotations"]["dev.sigstore.bundle.predicateType"] == "https://model_signing/signature/v1.0"
    # another attachment lands in the same index; the same one twice is listed once; filters work
    other = attach(client, REPO, subject_of(client, REPO, digest), "application/vnd.example.sbom.v1", b"{}",
                   "application/json", {}, "sbom.json")
    again = attach_bundle(client, REPO, digest, bundles_of(client, REPO, digest)[0])
    assert again != referrer  # a new referrer manifest (its created time differs), listed once
    assert len(client.referrers(REPO, digest)) == 3 and len(client.referrers(REPO, digest, BUNDLE_MEDIA_TYPE)) == 2
    assert [d["digest"] for d in client.referrers(REPO, digest, "application/vnd.example.sbom.v1")] == [other]
    client.push_referrer(REPO, client.get_manifest(REPO, other)[0])
    assert len(client.referrers(REPO, digest)) == 3
    assert client.referrers(REPO, "sha256:" + "0" * 64) == []
    assert is_attachment_tag(referrers_tag(digest)) and is_attachment_tag(referrers_tag(digest) + ".sig")
    assert not is_attachment_tag("stable") and not is_attachment_tag("3")


def oras_push(registry, folder: Path, tag: str, *, per_file: bool, annotations: Path) -> str:
    """`oras push` from inside the version folder, the documented way: every file (or the folders),
    titled by its path, model.json as the config."""
    names = sorted(files_of(folder)) if per_file else ["saved_model.pb", "variables", "assets.extra"]
    annotations.write_text(json.dumps({name: {TITLE: name} for name in names}))
    here = Path.cwd()
    os.chdir(folder)
    try:
        response = oras_client(registry).push(
            target=f"{registry.address}/{REPO}:{tag}", files=names, annotation_file=str(annotations),
            manifest_config=f"{DESCRIPTION_FILE}:{CONFIG_MEDIA_TYPE}", quiet=True)
    finally:
        os.chdir(here)
    return str(response.headers["Docker-Content-Digest"])


def test_an_oras_push_signed_with_the_model_signing_cli_installs(registry, tmp_path: Path) -> None:
    private, public = keys(tmp_path)
    client = registry.client()
    for per_file, version in ((True, 4), (False, 5)):
        folder = make_version(tmp_path / f"v{version}", version=version)
        signature = tmp_path / f"model-{version}.sig"  # outside the folder, so it is not a file of the model
        done = model_signing_cli("sign", "key", folder, "--private_key", private, "--signature", signature)
        assert done.returncode == 0, done.stderr
        digest = oras_push(registry, folder, str(version), per_file=per_file, annotations=tmp_path / "a.json")
        manifest = client.get_manifest(REPO, digest)[0]
        assert "artifactType" not in manifest and manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
        kinds = {layer["mediaType"] for layer in manifest["layers"]}
        assert kinds == ({"application/vnd.oci.image.layer.v1.tar"} if per_file else
                         {"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"})
        attach_bundle(client, REPO, digest, signature.read_bytes())  # `oras attach --artifact-type ...`
        pulled = pull_model(client, Reference.parse(f"{registry.address}/{REPO}:{version}"), tmp_path / "staging",
                            public_key=load_model_public_key(public))
        assert (pulled.version, pulled.signature) == (version, "model-signing"), per_file
        assert files_of(pulled.path) == files_of(folder)


def test_a_cosign_signature_tag_on_the_same_digest_changes_nothing(registry, tmp_path: Path, capsys) -> None:
    private, public = keys(tmp_path)
    client = registry.client()
    ref = Reference.parse(f"{registry.address}/{REPO}:6")
    digest, _ = push_version(client, ref, make_version(tmp_path / "v", version=6),
                             private_key=load_model_private_key(private))
    tag = push_cosign_signature(client, REPO, digest)
    assert tag in client.list_tags(REPO)
    pulled = pull_model(client, ref, tmp_path / "staging", public_key=load_model_public_key(public))
    assert (pulled.digest, pulled.signature) == (digest, "model-signing")
    assert main(["model", "ls", f"{registry.address}/{REPO}", "--insecure"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith(("6", "sha"))]
    assert rows == [["6", "version", "6", digest[:19], "model-signing", "2026-01-01T00:00:00Z"]]
