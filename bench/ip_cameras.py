"""Simulated free-running IP cameras for the latency rows of bench/pipeline.py.

File cameras started together deliver their frames in step: every camera's frame lands in the same
millisecond, so N frames always queue behind each other for the inference threads. Real cameras
run on their own clocks and their frames arrive spread over the frame interval. `IpCameraServer`
serves `count` cameras as MJPEG over HTTP (multipart/x-mixed-replace, what most IP cameras offer)
on 127.0.0.1, each sending the video's JPEG packets at `fps` from its own clock, the phases spread
evenly over one frame interval. A client gets the camera's next frame when it is due, whenever it
connects, so the phases do not depend on when the gateway connects. No decoding happens here: the
packets are sent as read from the file.
"""
from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.harness import jpeg_packets

logger = logging.getLogger(__name__)

BOUNDARY = b"frame"


class IpCameraServer:
    """HTTP MJPEG cameras /cam0 ... /cam{count-1}; `uri(i)` is what a gateway config points at."""

    def __init__(self, video: Path, count: int, fps: float = 30.0, packets: int = 60) -> None:
        self.count = count
        self.interval_s = 1.0 / fps
        self._packets, _ = jpeg_packets(video, packets)
        self._epoch = time.monotonic()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ip-cameras", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def uri(self, index: int) -> str:
        return f"http://127.0.0.1:{self.port}/cam{index}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def first_tick(self, camera: int, after: float) -> int:
        """The number of the camera's first frame due after `after` (frames are numbered from the epoch)."""
        return int((after - self._phase(camera)) // self.interval_s) + 1

    def due(self, camera: int, tick: int) -> float:
        """When the camera's frame number `tick` is due (time.monotonic())."""
        return self._phase(camera) + tick * self.interval_s

    def _phase(self, camera: int) -> float:
        return self._epoch + camera * self.interval_s / self.count

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                logger.debug("ip camera: " + format, *args)

            def do_GET(self) -> None:
                name = self.path.strip("/")
                if not name.startswith("cam") or not name[3:].isdigit() or int(name[3:]) >= server.count:
                    self.send_error(404, f"no camera {self.path!r}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY.decode()}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                camera = int(name[3:])
                tick = server.first_tick(camera, time.monotonic())
                try:
                    while True:
                        delay = server.due(camera, tick) - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        packet = server._packets[tick % len(server._packets)]
                        self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(packet.size).encode() + b"\r\n\r\n" + packet.tobytes() + b"\r\n")
                        self.wfile.flush()
                        tick += 1
                except (BrokenPipeError, ConnectionResetError):
                    return  # the gateway went away

        return Handler
