"""Where things are: the repository root and TF Serving's own test models (../shared/testdata)."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TFSERVING_TESTDATA = REPO.parent / "shared" / "testdata" / "tfserving"
BIN = Path(sys.executable).parent  # the venv's console scripts: edge-gateway, edge-model-server, edgectl
