"""`edgectl snapshot DEVICE CAMERA -o FILE.jpg`: a remote device's newest classified frame, labels drawn.

Sends the device's `snapshot` command over MQTT 5 (request/response, see
:mod:`provisioning.fleet.client`), checks the reply is a JPEG and writes it atomically (temp file,
fsync, rename). Prints one line: the file, the frame, its age, size and the top labels. ``-o -``
writes the JPEG to stdout (for a pipe). Exit status 0 written, 1 no reply or an error reply
(unknown camera, no classified frame yet), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import sys
from typing import Any

from edge.errors import FleetError, UsageError
from edge.util.fsutil import atomic_write_bytes
from provisioning.fleet.client import FleetClient, options_from

logger = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"


def describe(result: dict[str, Any]) -> str:
    tops = []
    for row in result.get("labels") or []:
        best = (row.get("top") or [{}])[0]
        prefix = f"{row['roi']}: " if row.get("roi") else ""
        tops.append(f"{prefix}{best.get('label', '?')} {float(best.get('score', 0.0)):.2f}")
    return (f"frame {result.get('frame')}, {result.get('age_s', 0.0):.1f}s old, {result.get('width')}x"
            f"{result.get('height')}{' (scaled)' if result.get('scaled') else ''}: {', '.join(tops) or 'no labels'}")


def jpeg_of(reply: dict[str, Any], device: str, camera: str) -> tuple[bytes, dict[str, Any]]:
    """The JPEG bytes and the result of a `snapshot` reply; FleetError for an error reply or a bad image."""
    if not reply.get("ok"):
        raise FleetError(f"{device}: snapshot of {camera!r} refused: {reply.get('error', 'no reason given')}")
    result = reply.get("result") or {}
    try:
        data = base64.b64decode(str(result.get("jpeg_base64", "")), validate=True)
    except (binascii.Error, ValueError):
        raise FleetError(f"{device}: the snapshot reply does not carry base64 JPEG data") from None
    if not data.startswith(JPEG_MAGIC):
        raise FleetError(f"{device}: the snapshot reply is not a JPEG image")
    return data, result


def cmd_snapshot(args: argparse.Namespace) -> int:
    if str(args.output) != "-" and args.output.suffix.lower() not in (".jpg", ".jpeg"):
        raise UsageError(f"-o {args.output}: the snapshot is a JPEG; name the file .jpg (or -o - for stdout)")
    payload = json.dumps({"camera": args.camera}).encode()
    with FleetClient(options_from(args)).connect(args.timeout) as client:
        reply = client.request(args.device, "snapshot", payload, timeout_s=args.timeout)
    data, result = jpeg_of(reply, args.device, args.camera)
    if str(args.output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        print(f"{args.device}/{args.camera}: {describe(result)}", file=sys.stderr)
        return 0
    atomic_write_bytes(args.output, data, mode=0o644)
    print(f"{args.output}: {len(data)} bytes, {args.device}/{args.camera} {describe(result)}")
    return 0
