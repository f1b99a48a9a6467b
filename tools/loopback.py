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
