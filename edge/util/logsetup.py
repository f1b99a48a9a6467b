"""Logging for the programs: journald with priorities under systemd, plain stderr elsewhere.

Under systemd, stderr is usually connected to the journal and ``JOURNAL_STREAM`` names it
(``<device>:<inode>`` of that stream). Then each line is written as ``<N>name: message`` where
``<N>`` is the syslog priority (``SyslogLevelPrefix=yes`` is systemd's default): ``journalctl -p
err`` finds errors, and no timestamp is added (the journal has its own). systemd-python's
JournalHandler is used instead when it is installed (structured fields); it is optional and needs
a compiler, so the prefix form is what a device gets by default. Anywhere else: timestamped lines.

No camera or model runtime is imported here (edge-model-server sets up its logging with this module
and has no OpenCV): OpenCV's own log level follows this logging where the cameras open their sources
(:func:`camera.sources.open_source`).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

logger = logging.getLogger(__name__)

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# syslog priorities (sd-daemon.h SD_ERR etc.) per logging level
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def syslog_priority(levelno: int) -> int:
    """The syslog priority for a logging level (levels between the named ones round towards DEBUG)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class JournalPrefixFormatter(logging.Formatter):
    """``<N>name: message`` lines for a stderr that systemd connects to the journal; each line of a
    multi-line message (tracebacks) carries the prefix, so none is logged at the default priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def stderr_is_journal(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """True when ``JOURNAL_STREAM`` names the device and inode of `stream` (default stderr)."""
    value = (environ if environ is not None else os.environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def _journal_handler(identifier: str) -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler  # systemd-python, optional (needs a compiler to install)
    except ImportError:
        return None
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return handler


def make_handler(identifier: str = "edge-gateway") -> logging.Handler:
    """The handler for this process: journald (systemd-python), journal-prefixed stderr, or plain stderr."""
    if stderr_is_journal():
        journal = _journal_handler(identifier)
        if journal is not None:
            return journal
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(JournalPrefixFormatter())
        return handler
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    return handler


def setup_logging(level: str = "info", identifier: str = "edge-gateway") -> None:
    """Configure the root logger once; quiet noisy libraries."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(identifier))
    root.setLevel(level.upper())
    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
