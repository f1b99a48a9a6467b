"""Short-lived runs of our own programs: `edgectl` and `edge-model-server` run to completion."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import BIN

EDGECTL = [sys.executable, "-m", "provisioning.cli"]


def edgectl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`edgectl ARGS` to completion (stdin closed, output captured, 60 s at most)."""
    return subprocess.run([*EDGECTL, *map(str, args)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def run_model_server(args: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run edge-model-server to completion (for flag/config errors that must exit)."""
    return subprocess.run([str(BIN / "edge-model-server"), *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
