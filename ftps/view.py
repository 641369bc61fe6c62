"""What a logged-in charger sees: one read-only file at /NAME, and nothing of any real file system.

pyftpdlib's AbstractedFS maps FTP paths onto a directory on disk; this view
has no directory at all. Every path is normalised as an FTP path and must be
exactly "/" or "/NAME"; anything else, however it is spelled ("..", absolute,
encoded, a symlink's name), does not exist.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator

from pyftpdlib.filesystems import AbstractedFS, FilesystemError

from repo_service.domain.catalog import FirmwareRecord

READ_ONLY = "this server is read-only: it only hands out one firmware file"
Opener = Callable[[int], Iterator[bytes]]


class StoredFile:
    """The firmware as pyftpdlib reads a file: seek to the REST offset once, then read blocks from storage.

    pyftpdlib closes the file however its transfer ends (sent, aborted, refused, the session gone);
    on_closed is then told, once.
    """

    def __init__(self, name: str, size: int, open_at: Opener, on_closed: Callable[[StoredFile], None]) -> None:
        self.name = name
        self.size = size
        self.closed = False
        self.start = 0
        self._open_at = open_at
        self._on_closed = on_closed
        self._blocks: Iterator[bytes] | None = None
        self._rest = b""

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self._blocks is not None or whence != os.SEEK_SET or not 0 <= offset <= self.size:
            raise OSError(errno.EINVAL, "only one seek, before reading, within the file")
        self.start = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        if self._blocks is None:
            self._blocks = self._open_at(self.start)
        if not self._rest:
            self._rest = next(self._blocks, b"")
        # pyftpdlib asks for 64 KiB, a whole block: it is handed on as it came, without a copy.
        if size < 0 or size >= len(self._rest):
            data, self._rest = self._rest, b""
        else:
            data, self._rest = self._rest[:size], self._rest[size:]
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            close = getattr(self._blocks, "close", None)
            if close is not None:
                close()
            self._on_closed(self)


class OneFileView(AbstractedFS):
    """The session's one file, named as in its location. The handler supplies firmware() and open_file()."""

    def __init__(self, root: str, cmd_channel) -> None:  # type: ignore[no-untyped-def]
        super().__init__("/", cmd_channel)
        self.handler = cmd_channel

    @property
    def firmware(self) -> FirmwareRecord:
        return self.handler.permit.firmware

    @property
    def file_path(self) -> str:
        return "/" + self.handler.file_name

    # -- paths: FTP paths only, never the disk

    def ftp2fs(self, ftppath: str) -> str:
        return self.ftpnorm(ftppath)

    def fs2ftp(self, fspath: str) -> str:
        return fspath if self.validpath(fspath) else "/"

    def validpath(self, path: str) -> bool:
        return path in ("/", self.file_path)

    def realpath(self, path: str) -> str:
        return path

    def _stat(self, path: str) -> os.stat_result:
        mtime = self.firmware.created_at.timestamp()
        if path == "/":
            return os.stat_result((stat.S_IFDIR | 0o555, 1, 1, 2, 0, 0, 0, mtime, mtime, mtime))
        if path == self.file_path:
            return os.stat_result((stat.S_IFREG | 0o444, 2, 1, 1, 0, 0, self.firmware.size, mtime, mtime, mtime))
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    stat = _stat
    lstat = _stat

    def isfile(self, path: str) -> bool:
        return path == self.file_path

    def isdir(self, path: str) -> bool:
        return path == "/"

    def islink(self, path: str) -> bool:
        return False

    def lexists(self, path: str) -> bool:
        return self.validpath(path)

    def getsize(self, path: str) -> int:
        return self._stat(path).st_size

    def getmtime(self, path: str) -> float:
        return self._stat(path).st_mtime

    def readlink(self, path: str) -> str:
        raise FilesystemError("there are no links here")

    def chdir(self, path: str) -> None:
        if path != "/":
            raise FileNotFoundError(errno.ENOENT, "No such directory")
        self.cwd = "/"

    def listdir(self, path: str) -> list[str]:
        if path == "/":
            return [self.handler.file_name]
        raise FileNotFoundError(errno.ENOENT, "No such directory")

    listdirinfo = listdir

    def open(self, filename: str, mode: str) -> StoredFile:
        if mode != "rb":
            raise FilesystemError(READ_ONLY)
        if filename != self.file_path:
            raise FileNotFoundError(errno.ENOENT, "No such file")
        return self.handler.open_file()

    def get_user_by_uid(self, uid: int) -> str:
        return "fwrepo"

    def get_group_by_gid(self, gid: int) -> str:
        return "fwrepo"

    # -- everything that would change something

    def _refuse(self, *arguments: object, **keywords: object) -> None:
        raise FilesystemError(READ_ONLY)

    mkdir = rmdir = remove = rename = chmod = utime = mkstemp = _refuse  # type: ignore[assignment]
