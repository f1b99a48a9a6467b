"""`edgectl console hash-password` and `edgectl config check` on `[console]` sections (the CLIs as subprocesses)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from edge.util.passwords import parse_hash, verify_password
from tests.support.processes import EDGECTL, edgectl

CONFIG = """device_id = "gate-01"
[[cameras]]
name = "front"
source = "{video}"
[model]
name = "colour"
store = "{store}"
[console]
enabled = true
{console}
"""


def hash_password(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGECTL, "console", "hash-password"], input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_hash_password_prints_a_line_the_config_accepts(tmp_path: Path) -> None:
    done = hash_password("a long console password\n")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert verify_password("a long console password", parse_hash(line))
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(video=tmp_path / "v.avi", store=tmp_path, console=f'password_hash = "{line}"'))
    (tmp_path / "v.avi").write_bytes(b"")
    checked = edgectl("config", "check", config)
    assert checked.returncode == 0, checked.stderr
    short = hash_password("short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr and short.stdout == ""


def test_config_check_refuses_a_console_open_to_the_network(tmp_path: Path) -> None:
    (tmp_path / "v.avi").write_bytes(b"")
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(video=tmp_path / "v.avi", store=tmp_path,
                                    console='bind = "0.0.0.0"\ntoken = "0123456789abcdef0123"'))
    done = edgectl("config", "check", config)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"edgectl: config error: {config}: console: bind 0.0.0.0 is reachable from the "
                                   "network: set tls_cert and tls_key (TLS), or bind to 127.0.0.1")
    assert "0123456789abcdef0123" not in done.stderr
