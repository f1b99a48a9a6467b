"""Logging for the daemon: journald under systemd (systemd-python when installed), else stderr."""
from __future__ import annotations

import logging
import os

import cv2

logger = logging.getLogger(__name__)

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "info") -> None:
    """Configure the root logger once; quiet noisy libraries."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler | None = None
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler  # type: ignore[import-not-found]

            handler = JournalHandler(SYSLOG_IDENTIFIER="edge-gateway")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:  # OpenCV/FFmpeg print their own warnings to stderr; the capture code logs what matters

        levels = cv2.utils.logging
        cv2.utils.logging.setLogLevel(levels.LOG_LEVEL_WARNING if level.lower() == "debug" else levels.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        pass
