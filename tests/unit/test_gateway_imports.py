"""What the gateway process loads before a model does: no inference runtime.

A gateway in `tfserving` mode never loads one (tests/e2e/test_gateway_tfserving.py checks the running
process's health: `process.runtimes_imported` is empty); the embedded backend imports its runtime
when it loads a version, and only the one that serves once the runtime selection is cached. Each of
these costs tens to hundreds of MB of RSS (TensorFlow ~550, OpenVINO ~70) or seconds of start-up."""
from __future__ import annotations

import subprocess
import sys

from tests.support.paths import REPO

# the in-process runtimes, and ml_dtypes (TensorFlow's and LiteRT's dtype package: ~6 MB, ~0.6 s to import)
RUNTIME_PACKAGES = ("tensorflow", "openvino", "ai_edge_litert", "ml_dtypes", "tflite_runtime")


def test_importing_the_gateway_loads_no_inference_runtime() -> None:
    code = ("import sys; import edge.app.main, edge.app.gateway, edge.app.wiring; "
            "print('\\n'.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                            check=True).stdout.split()
    assert {"edge.serving.tfserving", "edge.serving.embedded", "edge.serving.tensors"} <= set(loaded)
    assert not [m for m in loaded if m.split(".")[0] in RUNTIME_PACKAGES], \
        sorted(m for m in loaded if m.split(".")[0] in RUNTIME_PACKAGES)
