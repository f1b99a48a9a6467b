"""Prometheus's `promtool` without installing Prometheus: extracted from the Debian package.

`find_promtool()` returns $EDGE_PROMTOOL, else `build/tools/prometheus/usr/bin/promtool` (what
`make test` extracts), else `promtool` on PATH, else it extracts the package itself the same way
(`apt-get download prometheus && dpkg-deb -x`: no service, no users, no dependencies installed).
`check_metrics(promtool, text)` runs ``promtool check metrics`` (exit 0 clean, 3 lint problems,
1 parse error) and returns (exit status, output).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.paths import REPO

EXTRACTED = REPO / "build" / "tools" / "prometheus"
PROMTOOL = EXTRACTED / "usr" / "bin" / "promtool"


def extract_promtool(target: Path = EXTRACTED) -> Path:
    """Download the prometheus .deb with apt and unpack it into `target` (returns promtool's path)."""
    with tempfile.TemporaryDirectory(prefix="promtool-") as work:
        got = subprocess.run(["apt-get", "download", "prometheus"], cwd=work, capture_output=True, text=True,
                             timeout=300)
        debs = sorted(Path(work).glob("prometheus_*.deb"))
        if got.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download prometheus failed: {got.stderr.strip()[-300:]} "
                               "(run `apt-get update` first, or `make test`)")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="prometheus-", dir=target.parent))  # renamed into place: atomic
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True, timeout=120)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target / "usr" / "bin" / "promtool"


def find_promtool() -> Path:
    configured = os.environ.get("EDGE_PROMTOOL")
    if configured:
        return Path(configured)
    if PROMTOOL.is_file():
        return PROMTOOL
    on_path = shutil.which("promtool")
    if on_path:
        return Path(on_path)
    return extract_promtool()


def check_metrics(promtool: Path, text: bytes) -> tuple[int, str]:
    done = subprocess.run([str(promtool), "check", "metrics"], input=text, capture_output=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")
