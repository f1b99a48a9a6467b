"""Loopback helpers for the demo and the benchmarks: free ports, waiting for a listener, a broker."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    """Block until 127.0.0.1:port accepts connections, or raise RuntimeError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


def stop_pid(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM by PID, then SIGKILL if it has not exited within timeout_s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_mosquitto(work: Path, port: int) -> subprocess.Popen:
    """A throwaway Mosquitto on 127.0.0.1:port (no persistence); the caller stops it by PID."""
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(work / "mosquitto.log", "wb"))
    wait_port(port)
    return proc


SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: its dist-packages hold gi (GStreamer) and python3-opencv


def h264_video(path: Path, size: tuple[int, int], fps: int, seconds: float, gop: int,
               source: Path | None = None) -> Path:
    """An MP4 with H.264 (libx264, no B-frames, a keyframe every `gop` frames), made from `source`
    (scaled and looped) or from ffmpeg's test pattern; kept when it already exists."""
    if path.is_file():
        return path
    ffmpeg = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
    pattern = ["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}"]
    given = ["-stream_loop", "-1", "-i", str(source)]
    tmp = path.with_name(path.stem + ".partial.mp4")
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", *(given if source else pattern), "-t", f"{seconds:g}",
                    "-vf", f"scale={size[0]}:{size[1]},fps={fps}", "-c:v", "libx264", "-preset", "veryfast",
                    "-bf", "0", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
                    "-pix_fmt", "yuv420p", "-b:v", "4M", str(tmp)], check=True, timeout=600)
    tmp.replace(path)
    return path


def start_rtsp_server(work: Path, port: int, *, video: Path | None = None, live: str | None = None,
                      mounts: int = 1) -> subprocess.Popen:
    """tools/rtsp_server.py (GStreamer's RTSP server, Debian's Python) on 127.0.0.1:port, serving
    rtsp://127.0.0.1:port/cam0 .. cam<mounts-1>; the caller stops it by PID (stop_pid)."""
    script = Path(__file__).resolve().parent / "rtsp_server.py"
    args = [SYSTEM_PYTHON, str(script), "--port", str(port), "--mounts", str(mounts)]
    args += ["--file", str(video)] if video is not None else ["--live", str(live)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(work / f"rtsp-{port}.log", "wb"), text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" once it listens; "" if it died
    if line.strip() != "ready":
        stop_pid(proc)
        raise RuntimeError(f"RTSP server did not start: {(work / f'rtsp-{port}.log').read_text()[-2000:]}")
    return proc
