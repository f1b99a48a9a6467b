"""A loopback RTSP server for tests and benchmarks: GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0).

ffmpeg cannot serve RTSP to clients that pull, and Debian packages no mediamtx; GStreamer's server
can. Run with Debian's Python (``/usr/bin/python3``: ``gi`` lives in its dist-packages)::

    /usr/bin/python3 tools/rtsp_server.py --port 8554 --file camera.mp4 [--mounts 4] [--live 640x480@10]

Every mount ``/cam0`` .. ``/cam<N-1>`` serves the H.264 of ``--file`` (an MP4, no re-encoding) from
its start to each client that connects (its own pipeline per client, so cameras run on their own
clocks), or with ``--live WxH@FPS`` a live test pattern encoded with openh264 (GOP = 1 s). Prints
``ready`` once it listens; stop it by PID (SIGTERM).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", help="an MP4 holding H.264")
    parser.add_argument("--live", help="WIDTHxHEIGHT@FPS: a live openh264 test pattern instead of --file")
    parser.add_argument("--mounts", type=int, default=1)
    args = parser.parse_args(argv)
    import gi  # Debian's python3-gi: this script runs under /usr/bin/python3

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    if args.live:
        size, fps = args.live.split("@")
        width, height = size.split("x")
        launch = (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
                  f"framerate={fps}/1 ! openh264enc gop-size={fps} ! h264parse ! rtph264pay name=pay0 pt=96 "
                  "config-interval=1 )")
    elif args.file:
        launch = (f"( filesrc location={args.file} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 "
                  "config-interval=1 )")
    else:
        parser.error("give --file or --live")
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    for index in range(args.mounts):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(False)
        server.get_mount_points().add_factory(f"/cam{index}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or False)  # in GLib's loop
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
