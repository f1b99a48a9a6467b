"""Parse and validate camera source URIs into a `SourceSpec`; mask passwords for display."""
from __future__ import annotations

import functools
import logging
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import cv2

logger = logging.getLogger(__name__)

SourceKind = Literal["v4l2", "file", "ffmpeg", "gstreamer"]

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "tcp")

ACCEPTED_FORMS = (
    "accepted forms: '/dev/videoN' or a bare index like '0' (V4L2 camera); "
    "a path to an existing video file or 'file:///abs/path'; "
    "'rtsp://', 'rtsps://', 'http://', 'https://', 'udp://', 'tcp://' URLs (read by FFMPEG); "
    "'gst:<pipeline ending in appsink>' (GStreamer, e.g. Jetson CSI cameras)"
)

_V4L2_DEVICE = re.compile(r"^/dev/video\d+$")
_V4L2_STABLE_LINK = re.compile(r"^/dev/v4l/by-(id|path)/.+$")
_PASSWORD_IN_QUERY = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|pass)=)[^&#]*", re.IGNORECASE)


class SourceOpenError(OSError):
    """A source could not be opened (device missing, connection refused, timeout, bad file)."""


@dataclass(frozen=True)
class SourceSpec:
    """A validated source: `kind` picks the backend, `target` is what the backend opens.

    target is an int (V4L2 index), a device/file path, a URL, or a GStreamer pipeline string.
    """

    kind: SourceKind
    target: str | int
    uri: str

    def describe(self) -> str:
        return f"{self.kind} {mask_uri_password(self.uri)}"

    def __repr__(self) -> str:  # never show a password in logs or tracebacks
        return f"SourceSpec(kind={self.kind!r}, uri={mask_uri_password(self.uri)!r})"


def mask_uri_password(uri: str) -> str:
    """Return `uri` with a password in its user info (`user:pass@`) or query (`password=`) as ***."""
    masked = uri
    scheme, sep, rest = uri.partition("://")
    if sep:
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        at = authority.rfind("@")  # rfind: an unencoded '@' inside the password stays masked
        user, colon, _ = authority[:at].partition(":") if at >= 0 else ("", "", "")
        if colon:
            masked = f"{scheme}://{user}:***{rest[at:]}"
    return _PASSWORD_IN_QUERY.sub(r"\g<key>***", masked)


@functools.lru_cache(maxsize=1)
def gstreamer_available() -> bool:
    """True when this OpenCV build reports GStreamer support in its build information."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def parse_source_uri(uri: str) -> SourceSpec:
    """Validate a camera URI and say which backend opens it.

    Raises ValueError naming what is wrong and listing the accepted forms. A V4L2 device node
    need not exist yet (cameras are hot-plugged; capture retries), but a video file must exist.
    `gst:` pipelines need an OpenCV built with GStreamer (the pip wheels are not; on Jetson use
    JetPack's OpenCV); that path cannot be exercised in this project's CI.
    """
    if not isinstance(uri, str):
        raise ValueError(f"camera uri must be a string, got {type(uri).__name__}; {ACCEPTED_FORMS}")
    text = uri.strip()
    if not text:
        raise ValueError(f"camera uri is empty; {ACCEPTED_FORMS}")

    if text.isdigit():
        return SourceSpec("v4l2", int(text), text)
    if _V4L2_DEVICE.match(text) or _V4L2_STABLE_LINK.match(text):
        return SourceSpec("v4l2", text, text)

    if text.startswith("gst:"):
        return _parse_gstreamer(text)

    scheme, sep, _ = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme == "file":
            return _parse_file_url(text)
        if scheme in NETWORK_SCHEMES:
            return _parse_network_url(text, scheme)
        raise ValueError(f"camera uri {mask_uri_password(text)!r}: unsupported scheme '{scheme}://'; {ACCEPTED_FORMS}")

    try:
        path = Path(text).expanduser()
    except RuntimeError as exc:  # "~someone" without such a user
        raise ValueError(f"camera uri {text!r}: {exc}; {ACCEPTED_FORMS}") from None
    mode = _file_mode(path, text)
    if mode is not None and stat.S_ISREG(mode):
        return SourceSpec("file", str(path), text)
    if mode is not None:
        raise ValueError(f"camera uri {text!r}: {path} exists but is not a regular file; {ACCEPTED_FORMS}")
    if text.startswith("/dev/"):
        raise ValueError(f"camera uri {text!r}: not a V4L2 device name (expected /dev/videoN); {ACCEPTED_FORMS}")
    raise ValueError(f"camera uri {text!r}: no such video file {path}; {ACCEPTED_FORMS}")


def _parse_file_url(text: str) -> SourceSpec:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"camera uri {text!r}: file URLs must be local (file:///abs/path); {ACCEPTED_FORMS}")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise ValueError(f"camera uri {text!r}: file URL path must be absolute (file:///abs/path)")
    mode = _file_mode(path, text)
    if mode is None or not stat.S_ISREG(mode):
        raise ValueError(f"camera uri {text!r}: no such video file {path}")
    return SourceSpec("file", str(path), text)


def _file_mode(path: Path, text: str) -> int | None:
    """st_mode of `path`, None when nothing is there; ValueError when it cannot be a path at all."""
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # e.g. a name longer than the file system allows, or no permission
        raise ValueError(f"camera uri {text!r}: cannot be used as a file path ({exc.strerror}); "
                         f"{ACCEPTED_FORMS}") from None
    except ValueError:  # a NUL byte
        raise ValueError(f"camera uri {text!r}: a file path cannot contain a NUL character") from None


def _parse_network_url(text: str, scheme: str) -> SourceSpec:
    shown = mask_uri_password(text)
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"camera uri {shown!r}: invalid port ({exc})") from None
    if not parts.hostname:
        # ffmpeg reads 'udp://@:5000' as "listen on port 5000 on every interface".
        if not (scheme == "udp" and port is not None):
            raise ValueError(f"camera uri {shown!r}: missing host name; expected {scheme}://HOST[:PORT]/...")
    if scheme in ("udp", "tcp") and port is None:
        raise ValueError(f"camera uri {shown!r}: {scheme}:// needs a port, e.g. {scheme}://127.0.0.1:5000")
    return SourceSpec("ffmpeg", text, text)


def _parse_gstreamer(text: str) -> SourceSpec:
    pipeline = text[len("gst:"):].strip()
    if not pipeline:
        raise ValueError(
            "camera uri 'gst:' has an empty pipeline; expected e.g. "
            "'gst:nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! "
            "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1'"
        )
    if "appsink" not in pipeline:
        raise ValueError(f"camera uri {text!r}: a GStreamer pipeline for OpenCV must end in 'appsink'")
    if not gstreamer_available():
        raise ValueError(
            f"camera uri {text!r}: 'gst:' sources need OpenCV built with GStreamer, but this OpenCV "
            f"({cv2.__version__}) reports 'GStreamer: NO' in cv2.getBuildInformation(). Install an OpenCV "
            "with GStreamer (on Jetson, JetPack's python3-opencv instead of the pip wheel) or use another "
            "URI form (/dev/videoN, rtsp://...)"
        )
    return SourceSpec("gstreamer", pipeline, text)
