"""Chaos parts, the cameras: two looping video files and two live ffmpeg streams that faults cut or
replace with a listener that never sends a byte (see tests/chaos/__init__.py)."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tests.fixtures.streams import FfmpegStream
from tests.support.config import CameraSpec
from tests.support.frames import solid_frames, write_video
from tests.support.net import SilentServer, free_port

CAMERA_BACKOFF_CAP_S = 2.0  # backoff_max_s given to the cameras below
CAMERA_OPTS = {"watchdog_s": 3.0, "backoff_initial_s": 0.25, "backoff_max_s": CAMERA_BACKOFF_CAP_S,
               "open_timeout_s": 3.0, "read_timeout_s": 2.0}
BGR = {"red": (0, 0, 230), "green": (0, 230, 0), "blue": (230, 0, 0)}


def solid_video(path: Path, colour: str, count: int = 20, size: tuple[int, int] = (160, 120)) -> Path:
    return write_video(path, solid_frames(BGR[colour], count, size), 10.0)


class Cameras:
    """4 cameras: two looping video files, one MJPEG-over-HTTP and one MPEG-TS-over-TCP ffmpeg stream.

    `cut(name)` kills a live stream (port closed), `silence(name)` puts a listener that never writes
    on its port, `restore(name)` brings ffmpeg back on the same port.
    """

    def __init__(self, work: Path, fps: float = 5.0) -> None:
        self.work = work
        red = solid_video(work / "red.avi", "red")
        blue = solid_video(work / "blue.avi", "blue")
        self.streams: dict[str, FfmpegStream] = {}
        self.silent: dict[str, SilentServer] = {}
        for name, kind in (("mjpeg", "mjpeg_http"), ("mpegts", "mpegts_tcp")):
            port = free_port()
            self.streams[name] = FfmpegStream(kind, port, (160, 120), 10, None, work / f"ffmpeg-{name}.log")
        self.specs = [
            CameraSpec("red", str(red), fps=fps, extra=dict(CAMERA_OPTS)),
            CameraSpec("blue", str(blue), fps=fps, extra=dict(CAMERA_OPTS)),
            CameraSpec("mjpeg", self.streams["mjpeg"].uri, fps=fps, extra=dict(CAMERA_OPTS)),
            CameraSpec("mpegts", self.streams["mpegts"].uri, fps=fps, extra=dict(CAMERA_OPTS)),
        ]

    def start(self) -> None:
        for s in self.streams.values():
            s.start()

    def cut(self, name: str) -> None:
        self.streams[name].stop()

    def silence(self, name: str) -> None:
        self.streams[name].stop()
        self.silent[name] = SilentServer(self.streams[name].port)

    def restore(self, name: str) -> None:
        if name in self.silent:
            self.silent.pop(name).close()
        stream = self.streams[name]
        for attempt in range(5):
            try:
                stream.start()
                return
            except OSError:  # the port may linger for a moment
                stream.stop()
                time.sleep(0.5)
        stream.start()

    def stop(self) -> None:
        for s in self.silent.values():
            s.close()
        self.silent.clear()
        for s in self.streams.values():
            with contextlib.suppress(Exception):
                s.stop()
