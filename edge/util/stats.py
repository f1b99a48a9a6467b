"""Small statistics shared by the parts' stats(): the one percentile rule health uses."""
from __future__ import annotations

import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def percentile(samples: Sequence[float], q: float, digits: int = 2) -> float | None:
    """The nearest-rank `q` quantile (0..1) of `samples` (sorted here), rounded; None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)
