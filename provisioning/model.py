"""`edgectl model ...`: package a SavedModel as a version folder, push it to an OCI registry, promote, list.

The artifact format is documented in `edge/models/artifact.py`. TensorFlow is imported only by
`model package`; push/promote/ls need nothing but `requests` and `cryptography`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from edge.errors import ClassifierError, SavedModelError, UsageError
from edge.model_server.warmup import write_warmup_records
from edge.models.artifact.format import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    DESCRIPTION_FILE,
    EMPTY_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    SIGNATURE_ARTIFACT_TYPE,
    SIGNATURE_MEDIA_TYPE,
    check_model_manifest,
    pack_version,
)
from edge.models.artifact.signing import load_private_key, sign_digest, signature_tag
from edge.models.golden import list_images, read_image, write_reference
from edge.models.metadata import ASSETS_EXTRA, PreprocessSpec
from edge.serving.base import softmax
from edge.serving.embedded import image_input_of, scores_output_of
from edge.serving.preprocess import FramePreprocessor
from edge.serving.protos import messages
from edge.serving.savedmodel import SavedModelRunner
from edge.serving.tensors import from_ndarray
from edge.transport.oci import OCI_MANIFEST, RegistryClient
from edge.util.ociref import Reference

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")





# --- package -------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"version must be a positive integer, got {text!r}")
    return int(text)


def parse_preprocess(text: str | None) -> Any:
    """``color=RGB,mean=127,std=128`` (mean/std: one number or three joined by ':') -> PreprocessSpec."""
    if not text:
        return PreprocessSpec()
    fields: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in ("color", "mean", "std"):
            raise UsageError(f"--preprocess: expected color=RGB|BGR,mean=N[:N:N],std=N[:N:N], got {item!r}")
        if key == "color":
            if value not in ("RGB", "BGR"):
                raise UsageError(f"--preprocess: color must be RGB or BGR, got {value!r}")
            fields["color"] = value
            continue
        try:
            numbers = [float(v) for v in value.split(":")]
        except ValueError:
            raise UsageError(f"--preprocess: {key} must be a number or three numbers joined by ':', got {value!r}") from None
        if len(numbers) not in (1, 3) or (key == "std" and 0.0 in numbers):
            raise UsageError(f"--preprocess: {key} must be one or three numbers (std not 0), got {value!r}")
        fields[key] = tuple(numbers * 3 if len(numbers) == 1 else numbers)
    return PreprocessSpec(**fields)


def _edge_json(spec: Any, output: str, activation: str, created: str, source: str, golden: int) -> dict:
    pre: dict[str, Any] = {"color": spec.color, "resize": "stretch"}
    if spec.mean is not None:
        pre["mean"] = list(spec.mean)
    if spec.std is not None:
        pre["std"] = list(spec.std)
    return {"format": 1, "preprocess": pre, "output": {"name": output, "activation": activation},
            "created": created, "source": source, "golden": golden}


def package(savedmodel: Path, out: Path, *, name: str, version: int, labels: Path | None = None,
            golden: Path | None = None, preprocess: Any = None, output_name: str | None = None,
            activation: str = "none", force: bool = False, source: str | None = None) -> dict:
    """Build a complete version folder at ``out``; returns its model config (model.json)."""

    if not NAME_RE.match(name):
        raise UsageError(f"--name {name!r}: use letters, digits, '_', '.', '-' (it names the model folder)")
    if not (savedmodel / "saved_model.pb").is_file():
        raise UsageError(f"{savedmodel}: not a SavedModel directory (no saved_model.pb)")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it")
    label_lines: list[str] | None = None
    if labels is not None:
        try:
            label_lines = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--labels {labels}: cannot read it as UTF-8 text ({exc})") from None
        while label_lines and not label_lines[-1]:
            label_lines.pop()
    golden_images = [(p, read_image(p)) for p in list_images(golden)] if golden is not None else []
    spec = preprocess or PreprocessSpec()
    try:
        runner = SavedModelRunner(savedmodel)
        signature = runner.signature()
        image_input = image_input_of(signature)
        output = scores_output_of(signature, output_name)
    except (SavedModelError, ClassifierError) as exc:
        raise UsageError(f"{savedmodel}: {exc}") from None
    pre = FramePreprocessor(image_input, spec)

    def classify(image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = pre.batch_to_input(pre.to_model_pixels(image_bgr)[None])
        scores = np.asarray(runner.run({image_input.name: batch}, output_filter=[output])[output], dtype=np.float32)
        scores = scores.reshape(1, -1)
        return batch, (softmax(scores) if activation == "softmax" else scores)[0]

    blank = np.zeros((image_input.height, image_input.width, 3), dtype=np.uint8)
    classes = classify(blank)[1].size
    if label_lines is not None and len(label_lines) != classes:
        raise UsageError(f"--labels {labels}: {len(label_lines)} labels but output {output!r} has {classes} classes")
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    source = source or str(savedmodel.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        folder = staging / "v"
        shutil.copytree(savedmodel, folder, symlinks=False)
        extra = folder / ASSETS_EXTRA
        extra.mkdir(exist_ok=True)
        if label_lines is not None:
            (extra / "labels.txt").write_text("\n".join(label_lines) + "\n", encoding="utf-8")
        (extra / "edge.json").write_text(json.dumps(_edge_json(spec, output, activation, created, source,
                                                               len(golden_images)), indent=1) + "\n")
        batches = []
        if golden_images:
            results = {}
            (extra / "golden").mkdir(exist_ok=True)
            for path, image in golden_images:
                shutil.copyfile(path, extra / "golden" / path.name)
                batch, scores = classify(image)
                batches.append(batch)
                results[path.name] = scores
            write_reference(folder, results, output=output)
        _write_warmup(extra, name, image_input.name, batches or [classify(blank)[0]])
        config = {"format": 1, "name": name, "version": version,
                  "input": {"name": image_input.name, "dtype": image_input.dtype,
                            "shape": [-1, image_input.height, image_input.width, image_input.channels]},
                  "outputs": {k: {"dtype": v.dtype, "shape": [-1 if d is None else d for d in (v.shape or ())]}
                              for k, v in signature.outputs.items()},
                  "labels": len(label_lines or []), "golden": len(golden_images), "created": created, "source": source}
        (folder / DESCRIPTION_FILE).write_text(json.dumps(config, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(folder, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("packaged %s version %d at %s", name, version, out)
    return config


def _write_warmup(extra: Path, model_name: str, input_name: str, batches: list) -> None:
    """TF Serving warm-up records (PredictionLog.predict_log.request), one per golden image."""
    pb = messages()
    logs = []
    for batch in batches:
        log = pb.PredictionLog()
        request = log.predict_log.request
        request.model_spec.name = model_name
        request.model_spec.signature_name = "serving_default"
        request.inputs[input_name].CopyFrom(from_ndarray(batch))
        logs.append(log)
    write_warmup_records(extra / "tf_serving_warmup_requests", logs)


def cmd_package(args: argparse.Namespace) -> int:
    out = args.out or Path(args.name) / str(args.version)
    package(args.savedmodel, out, name=args.name, version=args.version, labels=args.labels, golden=args.golden,
            preprocess=parse_preprocess(args.preprocess), output_name=args.output_name,
            activation=args.activation, force=args.force, source=args.source)
    print(f"packaged {args.name} version {args.version} at {out}")
    return 0


# --- push / promote / ls ------------------------------------------------------------------------

def make_client(args: argparse.Namespace, ref: Reference) -> RegistryClient:
    username = args.username or os.environ.get("EDGE_REGISTRY_USERNAME")
    password = args.password or os.environ.get("EDGE_REGISTRY_PASSWORD")
    return RegistryClient(ref.registry, username=username, password=password, insecure=args.insecure,
                          ca_file=args.ca_file)


def parse_ref(text: str, *, tag: bool) -> Reference:
    ref = Reference.parse(text)
    if ref.digest:
        raise UsageError(f"{text}: give a tag, not a digest")
    if tag and not ref.tag:
        raise UsageError(f"{text}: name the tag to push, e.g. {ref}:1")
    if not tag and ref.tag:
        raise UsageError(f"{text}: give the repository without a tag, e.g. {ref.registry}/{ref.repository}")
    return ref


def push_version(client: RegistryClient, ref: Reference, version_dir: Path, *, private_key: Any = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[str, str | None]:
    """Push a packaged version folder under ``ref.tag``; returns (manifest digest, signature digest)."""
    with tempfile.TemporaryDirectory(prefix="edge-push-") as tmp:
        layer_path = Path(tmp) / "layer.tar.gz"
        config = pack_version(version_dir, layer_path)
        config_raw = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
        layer_digest = client.push_blob(ref.repository, layer_path, progress)
        config_digest = client.push_blob(ref.repository, config_raw)
        layer_size = layer_path.stat().st_size
    annotations = {
        "org.opencontainers.image.created": config.get("created", ""),
        "org.opencontainers.image.source": config.get("source", ""),
        "org.opencontainers.image.version": str(config["version"]),
        "dev.edge.model.name": config["name"],
        "dev.edge.model.version": str(config["version"]),
        "dev.edge.model.input": json.dumps(config["input"], separators=(",", ":"), sort_keys=True),
    }
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_raw)},
                "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_size}],
                "annotations": annotations}
    check_model_manifest(manifest, str(ref))
    digest = client.push_manifest(ref.repository, ref.tag or str(config["version"]), manifest)
    if private_key is None:
        return digest, None
    doc_raw = json.dumps(sign_digest(private_key, digest), separators=(",", ":"), sort_keys=True).encode()
    sig_manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIGNATURE_ARTIFACT_TYPE,
                    "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": client.push_blob(ref.repository, b"{}"),
                               "size": 2},
                    "layers": [{"mediaType": SIGNATURE_MEDIA_TYPE, "size": len(doc_raw),
                                "digest": client.push_blob(ref.repository, doc_raw)}],
                    "subject": {"mediaType": OCI_MANIFEST, "digest": digest,
                                "size": len(client.get_manifest(ref.repository, digest)[2])}}
    return digest, client.push_manifest(ref.repository, signature_tag(digest), sig_manifest)


def cmd_push(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref, tag=True)
    key = load_private_key(args.sign_key) if args.sign_key else None
    if not args.package.is_dir():
        raise UsageError(f"{args.package}: not a directory (expected a packaged version folder)")
    with make_client(args, ref) as client, Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            transient=True, console=_console(stderr=True)) as bar:
        task = bar.add_task(f"push {ref.repository}:{ref.tag}", total=None)
        digest, sig = push_version(client, ref, args.package, private_key=key,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(digest)
    if sig:
        print(f"signed: {ref.registry}/{ref.repository}:{signature_tag(digest)}", file=sys.stderr)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref, tag=False)
    if not TAG_RE.match(args.channel) or args.channel.isdigit():
        raise UsageError(f"--channel {args.channel!r}: a channel is a non-numeric tag (letters, digits, '_', '.', '-')")
    with make_client(args, ref) as client:
        manifest, digest, raw = client.get_manifest(ref.repository, str(args.version))
        check_model_manifest(manifest, f"{ref}:{args.version}")
        client.push_manifest_bytes(ref.repository, args.channel, raw, manifest.get("mediaType", OCI_MANIFEST))
    print(f"{ref}:{args.channel} -> {digest} (version {args.version})")
    return 0


def _console(stderr: bool = False) -> Any:
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 160)


def cmd_ls(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref, tag=False)
    with make_client(args, ref) as client:
        tags = client.list_tags(ref.repository)
        signed = {t[: -len(".sig")].replace("-", ":", 1) for t in tags if t.endswith(".sig")}
        digests = {t: client.resolve(ref.with_tag(t)) for t in tags if not t.endswith(".sig")}
        annotations = {d: client.get_manifest(ref.repository, d)[0].get("annotations") or {}
                       for d in set(digests.values())}
    table = Table(title=str(ref), box=None, header_style="bold")
    for column in ("TAG", "KIND", "VERSION", "DIGEST", "SIGNED", "CREATED"):
        table.add_column(column)
    ordered = sorted(digests, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t))
    for tag in ordered:
        digest, notes = digests[tag], annotations[digests[tag]]
        table.add_row(tag, "version" if tag.isdigit() else "channel", notes.get("dev.edge.model.version", "?"),
                      digest[:19], "yes" if digest in signed else "no", notes.get("org.opencontainers.image.created", ""))
    _console().print(table)
    return 0


def register(sub: Any) -> None:
    """Add `model package|push|promote|ls` to edgectl's subcommands."""
    model = sub.add_parser("model", help="package and publish model versions")
    model_sub = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND")

    pkg = model_sub.add_parser("package", help="turn a SavedModel into a version folder (labels, golden, warm-up)")
    pkg.add_argument("savedmodel", type=Path, metavar="SAVEDMODEL_DIR")
    pkg.add_argument("--name", required=True)
    pkg.add_argument("--version", required=True, type=positive_int)
    pkg.add_argument("--labels", type=Path, help="labels file, one class per line")
    pkg.add_argument("--golden", type=Path, help="folder of JPEG/PNG golden images")
    pkg.add_argument("--preprocess", help="e.g. color=RGB,mean=127,std=128 (mean/std: N or N:N:N)")
    pkg.add_argument("--output-name", help="the output holding class scores (default: the only rank-2 output)")
    pkg.add_argument("--activation", choices=("none", "softmax"), default="none")
    pkg.add_argument("--source", help="source recorded in the artifact (default: SAVEDMODEL_DIR's path)")
    pkg.add_argument("--out", type=Path, help="version folder to write (default ./<name>/<version>/)")
    pkg.add_argument("--force", action="store_true", help="replace an existing output folder")
    pkg.set_defaults(handler=cmd_package)

    def registry_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--username", help="registry user (or env EDGE_REGISTRY_USERNAME)")
        p.add_argument("--password", help="registry password (or env EDGE_REGISTRY_PASSWORD)")
        p.add_argument("--insecure", action="store_true", help="plain http (loopback/test registries)")
        p.add_argument("--ca-file", type=Path, help="CA bundle for the registry's TLS certificate")

    push = model_sub.add_parser("push", help="push a packaged version folder; prints the manifest digest")
    push.add_argument("package", type=Path, metavar="PACKAGE_DIR")
    push.add_argument("ref", metavar="REF", help="host:port/repository:tag, e.g. 127.0.0.1:5000/models/classifier:3")
    push.add_argument("--sign-key", type=Path, help="ed25519 private key (edgectl keys gen) to sign the digest")
    registry_args(push)
    push.set_defaults(handler=cmd_push)

    promote = model_sub.add_parser("promote", help="point a channel tag at a version's manifest")
    promote.add_argument("ref", metavar="REPO_REF", help="host:port/repository")
    promote.add_argument("version", type=positive_int, metavar="VERSION")
    promote.add_argument("--channel", required=True, help="stable, canary, or another non-numeric tag")
    registry_args(promote)
    promote.set_defaults(handler=cmd_promote)

    ls = model_sub.add_parser("ls", help="list versions and channels of a model repository")
    ls.add_argument("ref", metavar="REPO_REF", help="host:port/repository")
    registry_args(ls)
    ls.set_defaults(handler=cmd_ls)
    model.set_defaults(handler=lambda args: _help(model))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
