"""Logging as the programs set it up (edge.util.logsetup): under systemd, stderr lines carry the syslog
priority as ``<N>`` and no timestamp; anywhere else, timestamped lines; and no OpenCV for it.

The programs run in a subprocess whose stderr is a temporary file, with ``JOURNAL_STREAM`` naming
that file's ``st_dev:st_ino`` exactly as systemd names the journal stream it connects. The prefix
form is what a device gets without the optional systemd-python, so that run uses ``python -S``
(no site-packages: only the standard library, which is all logsetup needs)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from systemd.journal import JournalHandler  # systemd-python: the `systemd` extra, part of the test install

from edge.util.logsetup import make_handler, stderr_is_journal, syslog_priority
from tests.support.paths import REPO

PROGRAM = """
import logging, sys
from edge.util.logsetup import setup_logging
setup_logging("debug", identifier="edge-model-server")
log = logging.getLogger("edge.probe")
log.debug("a debug line")
log.info("an info line")
log.warning("a warning line")
log.error("an error line")
log.critical("a critical line")
log.warning("first line\\nsecond line")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("it failed")
print("cv2" in sys.modules)
"""


def stream_id(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def run_program(tmp_path: Path, journal_stream: str | None, *, site: bool = True) -> tuple[list[str], str]:
    """(the lines the program wrote to stderr, its stdout) with JOURNAL_STREAM set to `journal_stream`
    ("self": the stderr file's own device and inode)."""
    err = tmp_path / "stderr.txt"
    err.touch()
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "PYTHONPATH")}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = stream_id(err) if journal_stream == "self" else journal_stream
    if not site:
        env["PYTHONPATH"] = str(REPO)  # -S: the checkout and the standard library, nothing installed
    with open(err, "w") as stderr:
        done = subprocess.run([sys.executable, *([] if site else ["-S"]), "-c", PROGRAM], stdout=subprocess.PIPE,
                              stderr=stderr, text=True, timeout=60, cwd=REPO, env=env)
    text = err.read_text()
    assert done.returncode == 0, text
    return text.splitlines(), done.stdout


def test_under_systemd_each_line_carries_its_syslog_priority_and_no_timestamp(tmp_path: Path) -> None:
    lines, out = run_program(tmp_path, "self", site=False)
    assert lines[:7] == [
        "<7>edge.probe: a debug line",
        "<6>edge.probe: an info line",
        "<4>edge.probe: a warning line",
        "<3>edge.probe: an error line",
        "<2>edge.probe: a critical line",
        "<4>edge.probe: first line",
        "<4>second line",  # every line of a multi-line message: none lands at the journal's default priority
    ]
    traceback = lines[7:]
    assert traceback[0] == "<3>edge.probe: it failed"
    assert traceback[1] == "<3>Traceback (most recent call last):" and traceback[-1] == "<3>ValueError: boom"
    assert len(traceback) >= 4 and all(line.startswith("<3>") for line in traceback), traceback
    assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines)  # the journal has its own time
    assert out.strip() == "False"  # no OpenCV to set up logging


@pytest.mark.parametrize("journal_stream", [None, "other", "garbage"])
def test_elsewhere_lines_are_timestamped_without_priorities(tmp_path: Path, journal_stream: str | None) -> None:
    # None: not under systemd; "other": stderr is not the journal stream systemd set up (redirected
    # by hand, e.g. `edge-model-server ... 2>file` in a unit); "garbage": a value that is no stream
    other = tmp_path / "other"
    other.touch()
    given = {None: None, "other": stream_id(other), "garbage": "journal"}[journal_stream]
    lines, _ = run_program(tmp_path, given)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} DEBUG edge\.probe: a debug line", lines[0]), lines[0]
    assert re.fullmatch(rf"{stamp} ERROR edge\.probe: an error line", lines[3]), lines[3]
    assert lines[6] == "second line" and "Traceback (most recent call last):" in lines
    assert not any(line.startswith("<") for line in lines)


def test_importing_logsetup_and_starting_the_model_servers_logging_loads_no_opencv() -> None:
    code = ("import sys; import edge.util.logsetup, edge.model_server.main; "
            "edge.util.logsetup.setup_logging('info', identifier='edge-model-server'); "
            "print('cv2' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_journal_is_recognised_by_device_and_inode_only(tmp_path: Path) -> None:
    path = tmp_path / "stream"
    with open(path, "w") as stream:
        assert stderr_is_journal(stream, {"JOURNAL_STREAM": stream_id(path)})
        st = os.stat(path)
        for value in ("", "1:2", f"{st.st_dev}:{st.st_ino + 1}", f"{st.st_dev}", f"x:{st.st_ino}", f"{st.st_dev}:"):
            assert not stderr_is_journal(stream, {"JOURNAL_STREAM": value}), value
    assert not stderr_is_journal(stream, {"JOURNAL_STREAM": stream_id(path)})  # closed: not a stream


def test_with_systemd_python_installed_the_journal_gets_structured_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stream"
    with open(path, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setenv("JOURNAL_STREAM", stream_id(path))
        assert isinstance(make_handler("edge-gateway"), JournalHandler)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not isinstance(make_handler("edge-gateway"), JournalHandler)


def test_levels_between_the_named_ones_round_towards_debug() -> None:
    assert [syslog_priority(n) for n in (50, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0)] == [2, 3, 3, 4, 4, 6, 6, 7, 7, 7, 7]
