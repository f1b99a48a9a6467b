"""The child side of :func:`edge.serving.selection.select_in_subprocess`.

``python -m edge.serving.selection_worker VERSION_DIR --name N --version V`` loads the version
once with an in-process selection (in the parent's serving shape: ``--threads``, ``--interpreters``,
``--max-batch-size``), which converts, verifies, times and writes the cache; the
parent then reads the decision from the cache. TensorFlow's ~550 MB stay in this process.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge.models.store import ModelVersion
from edge.serving.base import DEFAULT_MAX_BATCH_SIZE
from edge.serving.embedded import EmbeddedClassifier
from edge.serving.selection import PRECISIONS, RUNTIMES

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Child side of :func:`select_in_subprocess`: load the version once, which selects and caches."""
    parser = argparse.ArgumentParser(prog="python -m edge.serving.selection_worker")
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--interpreters", type=int, default=0)
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    classifier = EmbeddedClassifier(ModelVersion(args.name, args.version, args.version_dir), threads=args.threads,
                                    runtime=args.runtime, isolate_selection=False, precision=args.precision,
                                    interpreters=args.interpreters, max_batch_size=args.max_batch_size)
    classifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
