"""The Debian package: built by packaging/deb/build.sh from the wheel, clean under lintian, installed into
a scratch Debian 12 root with dpkg (maintainer scripts run chrooted there), removed and purged."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.fixtures.packaging import copy_root, run


def test_lintian_reports_no_errors(built_deb: Path) -> None:
    proc = subprocess.run(["lintian", "--tag-display-limit", "0", built_deb], capture_output=True, text=True,
                          timeout=1800)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("W:")]
    assert not errors, "\n".join(errors)
    assert not warnings, "\n".join(warnings)


def test_installs_into_a_scratch_root_and_purges(built_deb: Path, debian_root: Path, tmp_path: Path) -> None:
    root = copy_root(debian_root, tmp_path / "root")
    run(["dpkg", f"--root={root}", "-i", built_deb], timeout_s=600)

    def chroot(*args: str) -> str:
        return run(["chroot", root, *args], timeout_s=300).stdout

    for program in ("edge-gateway", "edgectl", "edge-model-server"):
        assert "0." in chroot(f"/usr/bin/{program}", "--version")
    assert chroot("getent", "passwd", "edge").startswith("edge:")
    assert "video" in chroot("id", "-nG", "edge")
    assert (root / "etc/edge/gateway.toml").is_file()
    conffiles = (root / "var/lib/dpkg/info/edge-gateway.conffiles").read_text().split()
    assert conffiles == ["/etc/edge/gateway.toml"]
    unit = (root / "lib/systemd/system/edge-gateway.service").read_text()
    assert "ExecStart=/opt/edge-gateway/venv/bin/edge-gateway run" in unit
    assert not (root / "etc/systemd/system/multi-user.target.wants/edge-gateway.service").exists()  # not enabled
    assert "OK" in chroot("/usr/bin/edgectl", "config", "check", "/etc/edge/gateway.toml")
    assert (root / "usr/share/man/man1/edgectl.1.gz").is_file()
    # the packaged TF Serving descriptor set is used: no protoc or grpcio-tools on the device
    assert chroot("/opt/edge-gateway/venv/bin/python", "-c",
                  "import edge.serving.protos._compile as c; print(c.packaged_set(c.source_digest()) is not None)"
                  ).strip() == "True"
    assert subprocess.run(["chroot", root, "/opt/edge-gateway/venv/bin/python", "-c", "import grpc_tools"],
                          capture_output=True, timeout=120).returncode != 0
    # an edited conffile survives removal; purge takes it and the state folder
    (root / "etc/edge/gateway.toml").write_text((root / "etc/edge/gateway.toml").read_text() + "\n# local edit\n")
    run(["dpkg", f"--root={root}", "-r", "edge-gateway"], timeout_s=300)
    assert not (root / "opt/edge-gateway").exists()
    assert "# local edit" in (root / "etc/edge/gateway.toml").read_text()
    run(["dpkg", f"--root={root}", "-P", "edge-gateway"], timeout_s=300)
    assert not (root / "etc/edge").exists() and not (root / "var/lib/edge").exists()
