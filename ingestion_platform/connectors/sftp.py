"""Files on an SFTP server: paramiko lists and moves them, asyncssh downloads them.

Listing uses `listdir_attr`, one round trip per directory and never a stat per file. Bulk
downloads go through asyncssh, whose pipelined reads run at or above OpenSSH's own client
(paramiko's `get` reaches about half of it; bench/README.md). Both connect with the same
`SshSettings`, so the host key check and the credentials are the same for both.
"""

from __future__ import annotations

import asyncio
import posixpath
import stat
import time
from collections.abc import Callable

import asyncssh
import paramiko

from ingestion_platform.connectors.file_entries import (
    FileEntry,
    Listing,
    check_name,
    inside,
    unsafe_reason,
)
from ingestion_platform.connectors.ssh_connection import (
    CONNECT_TIMEOUT_SECONDS,
    SshSettings,
    open_transport,
)

FETCH_ATTEMPTS = 3
# 128 outstanding reads of the server's largest block keep loopback and WAN links full.
MAX_REQUESTS = 128

Progress = Callable[[str, int, int], None]


class SftpFiles:
    """A watched folder on an SFTP server."""

    def __init__(self, settings: SshSettings, root: str) -> None:
        self.settings = settings
        self.root = posixpath.normpath(root)
        self._transport = open_transport(settings)
        self._sftp = paramiko.SFTPClient.from_transport(self._transport)
        assert self._sftp is not None
        self._real_root = self._sftp.normalize(self.root)

    def list(self, recursive: bool) -> Listing:
        listing = Listing()
        folders = [""]
        while folders:
            folder = folders.pop()
            for attr in self._sftp.listdir_attr(posixpath.join(self.root, folder)):
                relative = posixpath.join(folder, attr.filename) if folder else attr.filename
                reason = unsafe_reason(relative)
                if reason:
                    listing.refused[relative] = reason
                    continue
                mode = attr.st_mode or 0
                if stat.S_ISLNK(mode):
                    target = self._symlink_target(relative)
                    if target is None:
                        listing.refused[relative] = "it is a symlink pointing out of the folder"
                        continue
                    attr = target
                    mode = attr.st_mode or 0
                listing.names.add(relative)
                if stat.S_ISDIR(mode):
                    if recursive:
                        folders.append(relative)
                elif stat.S_ISREG(mode):
                    listing.files.append(
                        FileEntry(relative, attr.st_size or 0, float(attr.st_mtime or 0))
                    )
        return listing

    def _symlink_target(self, relative: str) -> paramiko.SFTPAttributes | None:
        path = posixpath.join(self.root, relative)
        try:
            real = self._sftp.normalize(path)
        except OSError:
            return None
        if not inside(self._real_root, real):
            return None
        return self._sftp.stat(real)

    def stat(self, path: str) -> FileEntry | None:
        check_name(path)
        try:
            attr = self._sftp.lstat(posixpath.join(self.root, path))
            if stat.S_ISLNK(attr.st_mode or 0):
                target = self._symlink_target(path)
                if target is None:
                    return None
                attr = target
        except FileNotFoundError:
            return None
        return FileEntry(path, attr.st_size or 0, float(attr.st_mtime or 0))

    def fetch(self, pairs: list[tuple[FileEntry, str]], progress: Progress) -> None:
        """Download each (file, local path), retrying a dropped connection from the start."""
        for entry, _ in pairs:
            check_name(entry.path)
        asyncio.run(fetch_with_asyncssh(self.settings, self.root, pairs, progress))

    def move(self, path: str, target: str) -> None:
        check_name(path)
        check_name(target)
        destination = posixpath.join(self.root, target)
        self._makedirs(posixpath.dirname(destination))
        self._sftp.posix_rename(posixpath.join(self.root, path), destination)

    def _makedirs(self, folder: str) -> None:
        missing: list[str] = []
        while folder and folder != "/":
            try:
                self._sftp.stat(folder)
                break
            except FileNotFoundError:
                missing.append(folder)
                folder = posixpath.dirname(folder)
        for path in reversed(missing):
            self._sftp.mkdir(path)

    def remove(self, path: str) -> None:
        check_name(path)
        self._sftp.remove(posixpath.join(self.root, path))

    def close(self) -> None:
        self._sftp.close()
        self._transport.close()


def asyncssh_options(settings: SshSettings) -> dict[str, object]:
    """asyncssh connection options equivalent to `open_transport`'s checks and credentials."""
    options: dict[str, object] = {
        "username": settings.username,
        "agent_path": None,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "client_keys": None,
        "password": settings.password,
    }
    pinned = settings.pinned_keys()
    if pinned:
        keys = [asyncssh.import_public_key(f"{k.get_name()} {k.get_base64()}") for k in pinned]
        options["known_hosts"] = (keys, [], [])
        options["server_host_key_algs"] = [k.get_name() for k in pinned]
    elif settings.insecure_skip_host_key_check:
        options["known_hosts"] = None
    else:  # open_transport refuses this before any transfer is tried
        raise ConnectionError("no host key to verify against")
    if settings.private_key:
        passphrase = settings.passphrase
        options["client_keys"] = [asyncssh.import_private_key(settings.private_key, passphrase)]
    return options


async def fetch_with_asyncssh(
    settings: SshSettings, root: str, pairs: list[tuple[FileEntry, str]], progress: Progress
) -> None:
    pending = list(pairs)
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        try:
            async with asyncssh.connect(
                settings.host, settings.port, **asyncssh_options(settings)
            ) as connection:
                async with connection.start_sftp_client() as sftp:
                    while pending:
                        entry, local = pending[0]
                        await sftp.get(
                            posixpath.join(root, entry.path),
                            local,
                            max_requests=MAX_REQUESTS,
                            follow_symlinks=True,  # list() refused those pointing out
                            progress_handler=lambda _s, _d, done, total, p=entry.path: progress(
                                p, done, total
                            ),
                        )
                        pending.pop(0)
            return
        except (OSError, asyncssh.Error) as error:
            gone = isinstance(error, FileNotFoundError | asyncssh.SFTPNoSuchFile)
            if attempt == FETCH_ATTEMPTS or gone:
                raise ConnectionError(
                    f"downloading {pending[0][0].path} failed after {attempt} attempt(s): {error}"
                ) from error
            time.sleep(attempt)
