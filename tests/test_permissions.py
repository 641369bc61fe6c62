"""Nothing fwrepo keeps is readable by another user of the machine (issue 13, finding 8).

The attack as found: under the usual umask 022, the SQLite files and every stored image were world-readable,
so any local account could copy the grants, the audit trail and the firmware itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.builds import published_build, unique_vendor
from tests.support.fwrepo import Fwrepo


@pytest.fixture
def usual_umask() -> Iterator[None]:
    # The umask of a login shell, as `make run` and a hand-started `fwrepo serve` get it.
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _readable_by_others(data_dir: Path) -> list[str]:
    """Every file under data_dir with content that a user other than its owner can reach and read: it grants
    group or others read, and so does (search) every directory down to it, data_dir included."""
    found = []
    for directory, _, files in os.walk(data_dir):
        path_open = _reachable(Path(directory), data_dir)
        for name in files:
            path = Path(directory) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            if name != "serve.log" and path.stat().st_size and path_open & (mode >> 2) & 0o011:
                found.append(f"{oct(mode)} {path.relative_to(data_dir)}")
    return sorted(found)


def _reachable(directory: Path, data_dir: Path) -> int:
    # 0o010 if the group may search every directory from data_dir down to this one, 0o001 for others.
    allowed = 0o011
    for step in [directory, *directory.parents]:
        allowed &= stat.S_IMODE(step.stat().st_mode)
        if step == data_dir:
            break
    return allowed


def _modes(data_dir: Path, *names: str) -> dict[str, str]:
    return {name: oct(stat.S_IMODE((data_dir / name).stat().st_mode)) for name in names}


def test_a_data_directory_fwrepo_makes_is_0700_and_its_database_0600(usual_umask: None, tmp_path: Path) -> None:
    fwrepo = Fwrepo(data_dir=tmp_path / "new" / "var", environment={})
    fwrepo.key("release")  # made by the CLI: the data directory and the database first
    assert _modes(tmp_path, "new", "new/var", "new/var/fwrepo.sqlite3") == {
        "new": "0o700", "new/var": "0o700", "new/var/fwrepo.sqlite3": "0o600"}


def test_in_a_data_directory_others_may_enter_none_of_fwrepos_files_is_readable_to_them(
    usual_umask: None, tmp_path: Path
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)  # as an operator's `mkdir var` makes it
    os.chmod(tmp_path, 0o755)
    fwrepo = Fwrepo(data_dir=data_dir, environment={})
    fwrepo.start()
    try:
        with fwrepo.client("release") as release:
            firmware = published_build(release, unique_vendor())
        readable = _readable_by_others(data_dir)
        assert _modes(data_dir, "fwrepo.sqlite3", "fwrepo.sqlite3-wal", "fwrepo.sqlite3-shm", "storage",
                      "storage/firmware", f"storage/firmware/{firmware['id']}", "token-secret", "tls", "keys") == {
            "fwrepo.sqlite3": "0o600", "fwrepo.sqlite3-wal": "0o600", "fwrepo.sqlite3-shm": "0o600",
            "storage": "0o700", "storage/firmware": "0o700", f"storage/firmware/{firmware['id']}": "0o600",
            "token-secret": "0o600", "tls": "0o700", "keys": "0o700",
        }
    finally:
        fwrepo.stop()
    assert readable == [], "\n".join(readable)


def test_files_an_older_fwrepo_left_readable_are_closed_at_start(usual_umask: None, tmp_path: Path) -> None:
    fwrepo = Fwrepo(data_dir=tmp_path / "var", environment={})
    fwrepo.key("release")
    fwrepo.start()
    with fwrepo.client("release") as release:
        firmware = published_build(release, unique_vendor())
    fwrepo.stop()
    # What an older version made under umask 022.
    os.chmod(fwrepo.data_dir / "fwrepo.sqlite3", 0o644)
    os.chmod(fwrepo.data_dir / "storage", 0o755)
    os.chmod(fwrepo.data_dir / "storage" / "firmware" / firmware["id"], 0o644)
    fwrepo.start()
    try:
        assert _modes(fwrepo.data_dir, "fwrepo.sqlite3", "storage") == {"fwrepo.sqlite3": "0o600",
                                                                        "storage": "0o700"}
    finally:
        fwrepo.stop()
    assert "was readable by other users" in (fwrepo.data_dir / "serve.log").read_text()
