"""THE polling helper of the test suite: one function, one contract.

    value = wait_until(lambda: recorder.latest("status"), 30, message="a retained status")

`wait_until(predicate, timeout_s, *, interval_s=0.05, message=...)` calls `predicate` until it
returns something truthy and returns that value; after `timeout_s` seconds it raises
``AssertionError("timed out after <timeout_s>s waiting for <message>")``. The predicate is always
called at least once, and once more at the deadline, so a zero timeout means "check now". The
timeouts are generous bounds, never speed assertions. Exceptions from the predicate propagate.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float, *, interval_s: float = 0.05,
               message: str = "condition") -> T:
    """Poll `predicate` every `interval_s` until it returns a truthy value (returned), or raise
    AssertionError naming `message` after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {message}")
        time.sleep(min(interval_s, left))
