"""`edgectl model ...`: package a SavedModel as a version folder, push it to an OCI registry (signed,
with per-platform variants), promote channels (with signed, expiring channel statements), list.

The artifact format is documented in :mod:`edge.models.artifact`. TensorFlow is imported only by
`model package` (:mod:`provisioning.modelpack`); push/promote/ls (:mod:`provisioning.publish`) need
nothing but `requests` and `cryptography`. Registry settings (user, password, plain HTTP, CA file): the
flags, else ``EDGE_REGISTRY_*``, else the operator context's ``registry_*`` (:mod:`provisioning.profiles`);
credentials, if none of those gives a user, from the docker config (``--docker-config``,
``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``) and its credential helpers.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from edge.errors import UsageError
from edge.models.artifact.channel import CHANNEL_ANNOTATION, CHANNEL_ARTIFACT_TYPE, EXPIRES_ANNOTATION
from edge.models.artifact.layout import is_index
from edge.models.artifact.legacy import DEPRECATION, SIGNATURE_ARTIFACT_TYPE, signature_tag
from edge.models.artifact.modelsig import BUNDLE_MEDIA_TYPE
from edge.models.artifact.signing import load_model_private_key
from edge.transport import dockerconfig
from edge.transport.oci import RegistryClient, is_attachment_tag
from edge.util.ociref import Reference
from provisioning import profiles
from provisioning.modelpack import package, parse_preprocess, parse_variant
from provisioning.pki.trust import parse_duration
from provisioning.publish import promote, publish

logger = logging.getLogger(__name__)

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def cmd_package(args: argparse.Namespace) -> int:
    out = args.out or Path(args.name) / str(args.version)
    variant = parse_variant(args.variant)
    tflite = args.tflite or (variant is not None and variant.get("accelerator") == "litert")
    package(args.savedmodel, out, name=args.name, version=args.version, labels=args.labels, golden=args.golden,
            preprocess=parse_preprocess(args.preprocess), output_name=args.output_name,
            activation=args.activation, force=args.force, source=args.source, variant=variant, tflite=tflite)
    extra = f" (with model.tflite, {(out / 'model.tflite').stat().st_size} bytes)" if tflite else ""
    print(f"packaged {args.name} version {args.version} at {out}{extra}")
    return 0


def make_client(args: argparse.Namespace, ref: Reference) -> RegistryClient:
    """Flags, then EDGE_REGISTRY_*, then the operator context (--context, EDGE_CONTEXT, current_context),
    then the docker config (asked only if the registry wants credentials)."""
    settings = profiles.resolve(argparse.Namespace(
        registry_username=args.username, registry_password=args.password,
        registry_insecure=True if args.insecure else None, registry_ca_file=args.ca_file,
        context=getattr(args, "context", None), global_context=getattr(args, "global_context", None)),
        profiles.REGISTRY_SETTINGS)
    config = args.docker_config
    return RegistryClient(ref.registry, username=settings.registry_username, password=settings.registry_password,
                          insecure=bool(settings.registry_insecure), ca_file=settings.registry_ca_file,
                          credentials=lambda: dockerconfig.lookup(ref.registry, config))


def parse_ref(text: str, *, tag: bool) -> Reference:
    ref = Reference.parse(text)
    if ref.digest:
        raise UsageError(f"{text}: give a tag, not a digest")
    if tag and not ref.tag:
        raise UsageError(f"{text}: name the tag to push, e.g. {ref}:1")
    if not tag and ref.tag:
        raise UsageError(f"{text}: give the repository without a tag, e.g. {ref.registry}/{ref.repository}")
    return ref


def cmd_push(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref, tag=True)
    keys = [load_model_private_key(path) for path in args.sign_key or []]
    if any(isinstance(key, Ed25519PrivateKey) for key in keys):
        print(f"edgectl: warning: {DEPRECATION}", file=sys.stderr)
    for folder in args.package:
        if not folder.is_dir():
            raise UsageError(f"{folder}: not a directory (expected a packaged version folder)")
    with make_client(args, ref) as client, Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            transient=True, console=_console(stderr=True)) as bar:
        task = bar.add_task(f"push {ref.repository}:{ref.tag}", total=None)
        pushed = publish(client, ref, args.package, keys=keys,
                         progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(pushed.digest)
    if len(pushed.manifests) > 1 or pushed.manifests != [pushed.digest]:
        print(f"index of {len(pushed.manifests)} variant(s): {', '.join(pushed.manifests)}", file=sys.stderr)
    for signature in pushed.signatures:
        print(f"signed: {ref.registry}/{ref.repository}{':' if signature.endswith('.sig') else '@'}{signature}",
              file=sys.stderr)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref, tag=False)
    if not TAG_RE.match(args.channel) or args.channel.isdigit():
        raise UsageError(f"--channel {args.channel!r}: a channel is a non-numeric tag (letters, digits, '_', '.', '-')")
    lifetime = parse_duration(args.lifetime, "--lifetime") if args.lifetime else None
    if lifetime is not None and args.sign_key is None:
        raise UsageError("--lifetime needs --sign-key (the EC model-signing key signs the channel statement)")
    key = load_model_private_key(args.sign_key) if args.sign_key else None
    with make_client(args, ref) as client:
        digest, statement = promote(client, ref, args.version, args.channel, lifetime_s=lifetime, key=key)
    print(f"{ref}:{args.channel} -> {digest} (version {args.version})")
    if statement:
        print(f"channel statement {statement}, valid for {args.lifetime}: promote again before then to re-sign it",
              file=sys.stderr)
    return 0


def _console(stderr: bool = False) -> Any:
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 160)


def _attachments(client: RegistryClient, repository: str, digest: str, tags: set[str]) -> dict[str, Any]:
    """What is attached to one manifest or index: signature kind and channel statement expiry (unverified)."""
    doc = client.get_manifest(repository, digest)[0]
    targets = [m["digest"] for m in doc.get("manifests") or [] if isinstance(m, dict)] if is_index(doc) else [digest]
    signed = []
    for target in targets:
        kinds = {d.get("artifactType") for d in client.referrers(repository, target)}
        legacy = signature_tag(target) in tags and client.get_manifest(repository, signature_tag(target))[0].get(
            "artifactType") == SIGNATURE_ARTIFACT_TYPE  # not cosign's signature under the same tag
        signed.append("model-signing" if BUNDLE_MEDIA_TYPE in kinds else "ed25519" if legacy else "no")
    expires: dict[str, str] = {}
    for descriptor in client.referrers(repository, digest, CHANNEL_ARTIFACT_TYPE):
        notes = descriptor.get("annotations") or {}
        channel, until = notes.get(CHANNEL_ANNOTATION), str(notes.get(EXPIRES_ANNOTATION, ""))
        if channel and until > expires.get(channel, ""):
            expires[channel] = until
    summary = signed[0] if len(set(signed)) == 1 else "partly"
    return {"doc": doc, "signed": f"{summary} ({len(targets)} variants)" if is_index(doc) else summary,
            "expires": expires}


def cmd_ls(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref, tag=False)
    with make_client(args, ref) as client:
        tags = set(client.list_tags(ref.repository))
        digests = {t: client.resolve(ref.with_tag(t)) for t in tags if not is_attachment_tag(t)}
        info = {d: _attachments(client, ref.repository, d, tags) for d in set(digests.values())}
    table = Table(title=str(ref), box=None, header_style="bold")
    for column in ("TAG", "KIND", "VERSION", "DIGEST", "SIGNED", "CHANNEL EXPIRES", "CREATED"):
        table.add_column(column)
    ordered = sorted(digests, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t))
    for tag in ordered:
        found = info[digests[tag]]
        notes = found["doc"].get("annotations") or {}
        table.add_row(tag, "version" if tag.isdigit() else "channel", notes.get("dev.edge.model.version", "?"),
                      digests[tag][:19], found["signed"], found["expires"].get(tag, "") if not tag.isdigit() else "",
                      notes.get("org.opencontainers.image.created", ""))
    _console().print(table)
    return 0
