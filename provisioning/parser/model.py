"""edgectl's model commands: package, push, promote, ls."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from provisioning.parser.common import command, group, version_number
from provisioning.parser.fleet import add_context_option


def registry_args(p: argparse.ArgumentParser) -> None:
    """Registry flags; each unset one comes from EDGE_REGISTRY_*, then the operator context's registry_*."""
    p.add_argument("--username", help="registry user (EDGE_REGISTRY_USERNAME, the context's registry_username)")
    p.add_argument("--password", help="registry password (EDGE_REGISTRY_PASSWORD, the context's registry_password)")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="plain http, loopback/test registries (EDGE_REGISTRY_INSECURE, the context's registry_insecure)")
    p.add_argument("--ca-file", type=Path,
                   help="CA bundle for the registry's TLS certificate (EDGE_REGISTRY_CA_FILE, the context's "
                        "registry_ca_file)")
    add_context_option(p)
    p.add_argument("--docker-config", type=Path, metavar="FILE",
                   help="docker config.json with auths / credential helpers (default $DOCKER_CONFIG/config.json "
                        "or ~/.docker/config.json), used when no username is given")


def add_model(sub: Any) -> None:
    _, model_sub = group(sub, "model", "package and publish model versions", "model_command")
    pkg = command(model_sub, "package", "turn a SavedModel into a version folder (labels, golden, warm-up)",
                  "provisioning.model:cmd_package")
    pkg.add_argument("savedmodel", type=Path, metavar="SAVEDMODEL_DIR")
    pkg.add_argument("--name", required=True)
    pkg.add_argument("--version", required=True, type=version_number)
    pkg.add_argument("--labels", type=Path, help="labels file, one class per line")
    pkg.add_argument("--golden", type=Path, help="folder of JPEG/PNG golden images")
    pkg.add_argument("--preprocess", help="e.g. color=RGB,mean=127,std=128 (mean/std: N or N:N:N)")
    pkg.add_argument("--output-name", help="the output holding class scores (default: the only rank-2 output)")
    pkg.add_argument("--activation", choices=("none", "softmax"), default="none")
    pkg.add_argument("--source", help="source recorded in the artifact (default: SAVEDMODEL_DIR's path)")
    pkg.add_argument("--out", type=Path, help="version folder to write (default ./<name>/<version>/)")
    pkg.add_argument("--force", action="store_true", help="replace an existing output folder")
    pkg.add_argument("--variant", metavar="PLATFORM[:ACCELERATOR]",
                     help="this folder is one variant of a multi-platform version: linux/arm64, linux/amd64:cuda, "
                          "any:litert (push several variant folders together to make the index)")
    pkg.add_argument("--tflite", action="store_true",
                     help="also convert to model.tflite (LiteRT, float32) and check it on the golden images against "
                          "TensorFlow, for devices without TensorFlow (implied by an accelerator `litert` variant)")

    push = command(model_sub, "push", "push packaged version folder(s); prints the digest the tag points at",
                   "provisioning.model:cmd_push")
    push.add_argument("package", type=Path, nargs="+", metavar="PACKAGE_DIR",
                      help="a version folder; several (packaged with --variant) make a multi-platform index")
    push.add_argument("ref", metavar="REF", help="host:port/repository:tag, e.g. 127.0.0.1:5000/models/classifier:3")
    push.add_argument("--sign-key", type=Path, action="append",
                      help="model-signing private key (EC P-256, edgectl keys gen); an ed25519 key writes the "
                           "deprecated .sig signature; repeat to sign with both while devices migrate")
    registry_args(push)

    promote = command(model_sub, "promote", "point a channel tag at a version's manifest",
                      "provisioning.model:cmd_promote")
    promote.add_argument("ref", metavar="REPO_REF", help="host:port/repository")
    promote.add_argument("version", type=version_number, metavar="VERSION")
    promote.add_argument("--channel", required=True, help="stable, canary, or another non-numeric tag")
    promote.add_argument("--lifetime", metavar="DURATION",
                         help="attach a signed channel statement valid this long (e.g. 7d); devices report the "
                              "channel once it expires, so promote again before then to re-sign it")
    promote.add_argument("--sign-key", type=Path, help="the EC model-signing private key (with --lifetime)")
    registry_args(promote)

    ls = command(model_sub, "ls", "list versions and channels of a model repository", "provisioning.model:cmd_ls")
    ls.add_argument("ref", metavar="REPO_REF", help="host:port/repository")
    registry_args(ls)
