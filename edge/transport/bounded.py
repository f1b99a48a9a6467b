"""Reading a registry's answers within bounds of size and time (endless data, slow retrieval).

A hostile or broken registry can send a body that never ends, or one byte now and then, just
often enough that no socket timeout fires. :func:`body_chunks` reads what has arrived (``read1``)
and aborts when fewer than :data:`MIN_RATE_BYTES_PER_S` arrive over a whole window (the client's
``timeout_s``); :func:`read_limited` also caps the size of what is kept in memory.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import requests
import urllib3

from edge.errors import RegistryError

logger = logging.getLogger(__name__)

MIN_RATE_BYTES_PER_S = 1024  # slower than this over a whole timeout_s window: slow retrieval, abort
READ_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)


def body_chunks(response: requests.Response, size: int, window_s: float, what: str) -> Iterator[bytes]:
    """The response body in pieces as they arrive (at most `size` bytes each), refusing a trickle:
    fewer than MIN_RATE_BYTES_PER_S x `window_s` bytes in a `window_s` window raise RegistryError.

    Reads with ``read1`` (whatever the socket has) rather than ``iter_content``, which waits for a
    whole chunk: a registry sending one byte per second would otherwise never trip a timeout."""
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    pieces: Iterator[bytes]
    if read1 is None:  # urllib3 < 2.3 (an old distribution's): whole chunks, the socket timeout still applies
        pieces = response.iter_content(size)
    else:
        pieces = iter(lambda: bytes(read1(size, decode_content=True)), b"")
    floor = MIN_RATE_BYTES_PER_S * window_s
    window_start, window_bytes, total = time.monotonic(), 0, 0
    for chunk in pieces:
        window_bytes += len(chunk)
        total += len(chunk)
        now = time.monotonic()
        if now - window_start >= window_s:
            if window_bytes < floor:
                raise RegistryError(f"{what}: slow retrieval, {window_bytes} bytes in the last {now - window_start:.0f}s "
                                    f"(at least {MIN_RATE_BYTES_PER_S} bytes/s wanted) after {total} bytes; "
                                    "aborted (the download resumes from there next time)")
            window_start, window_bytes = now, 0
        yield chunk


def read_limited(response: requests.Response, limit: int, what: str, window_s: float) -> bytes:
    buf = bytearray()
    with response:
        try:
            for chunk in body_chunks(response, 64 << 10, window_s, what):
                buf.extend(chunk)
                if len(buf) > limit:
                    raise RegistryError(f"{what} is larger than {limit} bytes; refusing it")
        except READ_ERRORS as exc:
            raise RegistryError(f"{what}: reading it failed: {short_reason(exc)}") from None
    return bytes(buf)


def short_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "Temporary failure in name resolution"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__
