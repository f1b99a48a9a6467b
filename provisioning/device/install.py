"""`edgectl install|uninstall`: systemd units, the `edge` user, and the folders the gateway uses.

    edgectl install                 # as root on the device: units, user, folders, enable
    edgectl install --root /mnt/img --no-enable
    edgectl uninstall [--purge]     # --purge also removes /etc/edge, /var/lib/edge and the user

Units go to ``/etc/systemd/system/`` with ``ExecStart=<program>`` resolved to this installation's
``edge-gateway`` / ``edge-model-server``; each carries an ``# Installed by edgectl`` header so
uninstall removes only what install wrote. Only ``edge-gateway.service`` is enabled; the TF
Serving units are installed for devices that want them. Under ``--root`` no user is created (the
target's user database is not ours to edit: the first boot's ``edgectl install`` or a sysusers.d
entry does it) and enabling is done with ``systemctl --root``.
"""
from __future__ import annotations

import argparse
import grp
import logging
import os
import pwd
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

from edge.errors import ServiceInstallError
from provisioning.device.init import under_root
from provisioning.pki.ca import write_file

logger = logging.getLogger(__name__)

USER, GROUP, DEVICE_GROUP = "edge", "edge", "video"
UNIT_DIR = Path("/etc/systemd/system")
GATEWAY_UNIT = "edge-gateway.service"
UNITS = {  # unit file -> program its ExecStart names
    GATEWAY_UNIT: "edge-gateway",
    "edge-model-server.service": "edge-model-server",
    "tensorflow-serving.service": None,
}
MARKER = "# Installed by edgectl install from "
ETC, STATE, MODELS = Path("/etc/edge"), Path("/var/lib/edge"), Path("/var/lib/edge/models")



MAN_DIR = Path("/usr/local/share/man/man1")
COMPLETION_DIR = Path("/usr/local/share/bash-completion/completions")
EXAMPLE_CONFIG = ETC / "gateway.toml.example"


def data_dir() -> Path:
    """The installation's data files: the wheel's package data (edge/_data: units, example config, man
    pages, completions, written at build time), else a source checkout's own folders."""
    packaged = Path(str(files("edge").joinpath("_data")))
    if (packaged / "systemd" / GATEWAY_UNIT).is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "systemd" / GATEWAY_UNIT).is_file():
        return checkout
    raise ServiceInstallError("cannot find the unit files (edge/_data/systemd/edge-gateway.service) of this "
                              "installation; reinstall the edge-gateway package")


def unit_source_dir() -> Path:
    return data_dir() / "systemd"


def program_path(name: str) -> Path:
    """The installed console script: next to this Python first (venvs), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is None:
        raise ServiceInstallError(f"program {name!r} not found next to {sys.executable} or on PATH; "
                           "install the edge package first")
    return Path(found).absolute()


def render_unit(source: Path, program: str | None) -> str:
    text = source.read_text(encoding="utf-8")
    if program is not None:
        text = text.replace(f"ExecStart={program} ", f"ExecStart={program_path(program)} ")
    return f"{MARKER}{source}\n{text}"


def systemd_running() -> bool:
    """sd_booted(): systemd is PID 1 on this machine."""
    return Path("/run/systemd/system").is_dir()


def _run(cmd: list[str], notes: list[str]) -> bool:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"{' '.join(cmd)}: {exc}")
        return False
    if proc.returncode != 0:
        notes.append(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        return False
    return True


def ensure_user(notes: list[str]) -> None:
    if os.geteuid() != 0:
        raise ServiceInstallError("creating the edge user needs root (run with sudo, or pass --root DIR)")
    try:
        grp.getgrnam(DEVICE_GROUP)
    except KeyError:
        if not _run(["groupadd", "--system", DEVICE_GROUP], notes):
            raise ServiceInstallError(f"cannot create group {DEVICE_GROUP}: {notes[-1]}") from None
    try:
        pwd.getpwnam(USER)
        if not _run(["usermod", "-aG", DEVICE_GROUP, USER], notes):
            raise ServiceInstallError(f"cannot add {USER} to {DEVICE_GROUP}: {notes[-1]}")
        notes.append(f"user {USER} exists; ensured it is in group {DEVICE_GROUP}")
    except KeyError:
        if not _run(["useradd", "--system", "--user-group", "--groups", DEVICE_GROUP, "--home-dir", str(STATE),
                     "--no-create-home", "--shell", "/usr/sbin/nologin", USER], notes):
            raise ServiceInstallError(f"cannot create user {USER}: {notes[-1]}") from None
        notes.append(f"created system user {USER} (groups {USER}, {DEVICE_GROUP})")


def make_folders(root: Path | None, chown: bool) -> list[Path]:
    made = []
    for path, mode, owner in ((ETC, 0o750, ("root", GROUP)), (STATE, 0o750, (USER, GROUP)),
                              (MODELS, 0o750, (USER, GROUP))):
        target = under_root(root, path)
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, mode)
        if chown:
            shutil.chown(target, owner[0], owner[1])
        made.append(target)
    if chown:  # the config (maybe 0600 with a password) must be readable by the service user
        for item in under_root(root, ETC).iterdir():
            if item.is_file():
                shutil.chown(item, USER if item.stat().st_mode & 0o077 == 0 else "root", GROUP)
    return made


def install(root: Path | None, enable: bool) -> tuple[list[Path], list[str]]:
    """Place units and folders (and the user when root is None); returns (written paths, notes)."""
    notes: list[str] = []
    source_dir = unit_source_dir()
    rendered = {name: render_unit(source_dir / name, program) for name, program in UNITS.items()
                if (source_dir / name).is_file()}
    if root is None:
        ensure_user(notes)
    else:
        notes.append(f"--root: user {USER} not created (create it on the device: `edgectl install` there, "
                     f"or `useradd --system --user-group --groups {DEVICE_GROUP} {USER}`)")
    written = make_folders(root, chown=root is None)
    unit_dir = under_root(root, UNIT_DIR)
    for name, text in rendered.items():
        write_file(unit_dir / name, text.encode("utf-8"), 0o644)
        written.append(unit_dir / name)
    verify_units([unit_dir / GATEWAY_UNIT], notes)
    written += install_docs(root)
    if not enable:
        notes.append(f"--no-enable: {GATEWAY_UNIT} not enabled")
    elif root is not None:
        if _run(["systemctl", f"--root={root}", "enable", GATEWAY_UNIT], notes):
            notes.append(f"enabled {GATEWAY_UNIT} in {root}")
    elif not systemd_running():
        notes.append(f"systemd is not running as PID 1 here: skipped `systemctl enable --now {GATEWAY_UNIT}`")
    else:
        _run(["systemctl", "daemon-reload"], notes)
        if _run(["systemctl", "enable", GATEWAY_UNIT], notes):
            notes.append(f"enabled {GATEWAY_UNIT}; start it with `systemctl start {GATEWAY_UNIT}` "
                         "after `edgectl doctor` passes")
    return written, notes


def install_docs(root: Path | None) -> list[Path]:
    """The example config beside the real one, man pages and bash completions (those built into the wheel)."""
    data, written = data_dir(), []
    example = data / "examples" / "gateway.toml"
    if example.is_file():
        write_file(under_root(root, EXAMPLE_CONFIG), example.read_bytes(), 0o644)
        written.append(under_root(root, EXAMPLE_CONFIG))
    for folder, pattern, target in ((data / "man", "*.1", MAN_DIR), (data / "completion", "*.bash", COMPLETION_DIR)):
        for source in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            name = source.name.removesuffix(".bash")
            write_file(under_root(root, target) / name, source.read_bytes(), 0o644)
            written.append(under_root(root, target) / name)
    return written


def verify_units(units: list[Path], notes: list[str]) -> None:
    if shutil.which("systemd-analyze") is None:
        notes.append("systemd-analyze not found: units not verified")
        return
    # --man=no: the man pages may be installed under --root, not where this machine's man looks
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise ServiceInstallError(f"systemd-analyze verify failed: {proc.stderr.strip()}")


def uninstall(root: Path | None, purge: bool) -> tuple[list[Path], list[str]]:
    notes: list[str] = []
    removed: list[Path] = []
    unit_dir = under_root(root, UNIT_DIR)
    if root is not None:
        if (unit_dir / GATEWAY_UNIT).exists():
            _run(["systemctl", f"--root={root}", "disable", GATEWAY_UNIT], notes)
    elif systemd_running():
        _run(["systemctl", "disable", "--now", GATEWAY_UNIT], notes)
    else:
        notes.append("systemd is not running as PID 1 here: skipped `systemctl disable --now`")
    for name in UNITS:
        path = unit_dir / name
        if not path.exists():
            continue
        if not path.read_text(encoding="utf-8", errors="replace").startswith(MARKER):
            notes.append(f"kept {path}: not written by edgectl install")
            continue
        path.unlink()
        removed.append(path)
    wants = unit_dir / "multi-user.target.wants" / GATEWAY_UNIT
    if wants.is_symlink():
        wants.unlink()
        removed.append(wants)
    if root is None and systemd_running():
        _run(["systemctl", "daemon-reload"], notes)
    if purge:
        for path in (under_root(root, ETC), under_root(root, STATE)):
            if path.exists():
                shutil.rmtree(path)
                removed.append(path)
        if root is None:
            try:
                pwd.getpwnam(USER)
            except KeyError:
                pass
            else:
                _run(["userdel", USER], notes)
                notes.append(f"removed user {USER}")
    else:
        notes.append(f"kept {under_root(root, ETC)} and {under_root(root, STATE)} (config, models, spool); "
                     "--purge removes them")
    return removed, notes


def cmd_install(args: argparse.Namespace) -> int:
    written, notes = install(args.root, enable=not args.no_enable)
    for path in written:
        print(f"installed {path}")
    for note in notes:
        print(f"note: {note}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    removed, notes = uninstall(args.root, purge=args.purge)
    for path in removed:
        print(f"removed {path}")
    for note in notes:
        print(f"note: {note}")
    return 0
