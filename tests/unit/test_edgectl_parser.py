"""edgectl's parser (provisioning.parser): standard library only, every command's handler exists, and a
command imports only what it uses."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from provisioning.cli import main, resolve_handler
from provisioning.parser import build_parser
from tests.support.paths import REPO

HEAVY = ("numpy", "cv2", "paho", "cryptography", "grpc", "requests", "tensorflow", "pydantic", "google")


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(command path, handler default) for every leaf of the parser tree."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [(path, parser.get_default("handler"))]
    found: list[tuple[tuple[str, ...], object]] = []
    for name, child in subparsers[0].choices.items():
        found += commands(child, (*path, name))
    return found


def test_every_command_names_a_handler_that_exists() -> None:
    leaves = commands(build_parser())
    paths = {path for path, _ in leaves}
    assert {("status",), ("fleet", "rollout", "start"), ("trust", "sign", "rotate"), ("model", "push")} <= paths
    for path, spec in leaves:
        assert isinstance(spec, str) and ":" in spec, (path, spec)
        assert callable(resolve_handler(spec)), (path, spec)


def test_the_parser_is_standard_library_only() -> None:
    code = ("import sys; before = set(sys.modules); import provisioning.parser; "
            "print('\\n'.join(sorted(set(sys.modules) - before)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                            check=True).stdout.split()
    ours = {"edge", "edge.util", "edge.util.paths", "provisioning", "provisioning.names"}
    outside = [m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names and m not in ours
               and not m.startswith("provisioning.parser")]
    assert not outside, outside


def test_status_imports_only_what_it_uses(tmp_path) -> None:
    """`edgectl status --quiet` is a container health check, run every 30 s: no numpy, paho, gRPC..."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "provisioning.cli", "status", "--quiet",
                           "--file", tmp_path / "absent.json"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 1  # no status file: not healthy
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "edge.device.status_file" in imported  # what the status command reads with
    assert not [m for m in imported if m.split(".")[0] in HEAVY], sorted(m for m in imported if m.split(".")[0] in HEAVY)


def test_version_and_group_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("edgectl ")
    assert main(["fleet", "rollout"]) == 2
    assert "usage: edgectl fleet rollout" in capsys.readouterr().err
    assert main([]) == 2
    assert "usage: edgectl" in capsys.readouterr().err
