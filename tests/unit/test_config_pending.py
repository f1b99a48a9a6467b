"""edge.config.pending: a remote config change is pending until the gateway started with it."""
from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from edge.config import pending
from tests.support.paths import REPO


def files(tmp_path: Path) -> tuple[Path, Path]:
    config, backup = tmp_path / "gateway.toml", tmp_path / "gateway.toml.bak"
    config.write_text("new = true\n")
    config.chmod(0o640)
    backup.write_text("old = true\n")
    return config, backup


def test_attempts_are_counted_and_confirm_ends_the_change(tmp_path: Path) -> None:
    config, backup = files(tmp_path)
    assert pending.pending(config) is None and pending.begin_attempt(config) is None
    pending.mark_pending(config, backup, ["model.version"])
    assert [pending.begin_attempt(config).attempts for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
    change = pending.pending(config)
    assert change is not None and change.backup == backup and change.changed == ["model.version"]
    pending.confirm(config)
    assert pending.pending(config) is None and config.read_text() == "new = true\n"
    assert pending.take_reverted(config) is None


def test_revert_puts_the_previous_file_back_with_its_mode_and_records_why_once(tmp_path: Path) -> None:
    config, backup = files(tmp_path)
    pending.mark_pending(config, backup, ["console.port"])
    change = pending.begin_attempt(config)
    assert change is not None
    record = pending.revert(config, change, "cannot start: port 80 is taken")
    assert config.read_text() == "old = true\n" and stat.S_IMODE(config.stat().st_mode) == 0o640
    assert pending.pending(config) is None
    assert record["keys"] == ["console.port"] and record["reason"] == "cannot start: port 80 is taken"
    assert pending.take_reverted(config) == record
    assert pending.take_reverted(config) is None  # reported once


def test_a_missing_backup_is_said_in_the_record_and_the_file_is_left(tmp_path: Path) -> None:
    config, backup = files(tmp_path)
    pending.mark_pending(config, backup, ["model.version"])
    backup.unlink()
    change = pending.begin_attempt(config)
    assert change is not None
    record = pending.revert(config, change, "cannot start: no version 9")
    assert config.read_text() == "new = true\n"
    assert record["reason"].startswith("cannot start: no version 9; NOT reverted: ") and pending.pending(config) is None


def test_an_unreadable_record_is_dropped_not_acted_on(tmp_path: Path) -> None:
    config, _ = files(tmp_path)
    record = tmp_path / "gateway.toml.pending"
    for junk in ("{", "[]", '{"backup": 1}', '{"backup": "x", "changed": [], "attempts": "many", "since": 0}'):
        record.write_text(junk)
        assert pending.begin_attempt(config) is None and not record.exists()
    (tmp_path / "gateway.toml.reverted").write_text("not json")
    taken = pending.take_reverted(config)
    assert taken is not None and "could not be read" in taken["reason"]


def test_a_read_only_config_folder_starts_like_any_other(tmp_path: Path) -> None:
    """A container mounts /etc/edge read-only: no record can exist there, and the start must not fail
    removing one (unlink answers EROFS even for a missing file). A real read-only bind mount in a mount
    namespace of its own (root, as the tests run)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "gateway.toml").write_text("new = true\n")
    script = ("from pathlib import Path; from edge.config import pending; c = Path(sys.argv[1]); "
              "print(pending.begin_attempt(c), pending.pending(c), pending.take_reverted(c)); pending.confirm(c)")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" '
                           '&& ! touch "$1/probe" 2>/dev/null && exec "$2" -c "import sys; $3" "$1/gateway.toml"',
                           "sh", str(folder), sys.executable, script],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "None None None"
    assert sorted(p.name for p in folder.iterdir()) == ["gateway.toml"]
