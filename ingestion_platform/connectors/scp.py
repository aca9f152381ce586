"""Files on a server that has no SFTP subsystem but allows the legacy SCP protocol.

Fetching speaks SCP's source protocol (`scp -f`) on a paramiko exec channel, with the same
verified transport as SFTP. Our own channel rather than the `scp` package: that package
writes the file under the name the server sends, and here every local name is ours.
Listing runs `find … -printf` (GNU find) on the server: one command per listing, giving
type, size, mtime and name of every entry, NUL-separated so any name survives.
Archive and delete run `mv` / `rm` with shell-quoted names.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable

import paramiko

from ingestion_platform.connectors.file_entries import (
    FileEntry,
    Listing,
    check_name,
    inside,
    unsafe_reason,
)
from ingestion_platform.connectors.ssh_connection import SshSettings, open_transport

CHUNK = 1 << 20
# type, size, mtime, resolved target (symlinks only), path relative to the start folder
FIND_FORMAT = r"%y\t%s\t%T@\t%l\t%P\0"

Progress = Callable[[str, int, int], None]


class ScpError(OSError):
    """The server's scp or shell reported a failure."""


class ScpFiles:
    """A watched folder on an SCP-only server."""

    def __init__(self, settings: SshSettings, root: str) -> None:
        self.settings = settings
        self.root = posixpath.normpath(root)
        self._transport = open_transport(settings)

    def _run(self, command: str) -> bytes:
        channel = self._transport.open_session()
        try:
            channel.exec_command(command)
            output = bytearray()
            while chunk := channel.recv(CHUNK):
                output += chunk
            errors = channel.makefile_stderr("rb").read().decode(errors="replace")
            status = channel.recv_exit_status()
        finally:
            channel.close()
        if status != 0:
            raise ScpError(f"`{command}` failed on the server ({status}): {errors.strip()}")
        return bytes(output)

    def list(self, recursive: bool) -> Listing:
        depth = "" if recursive else "-maxdepth 1 "
        command = f"find {shlex.quote(self.root)} -mindepth 1 {depth}-printf '{FIND_FORMAT}'"
        listing = Listing()
        for record in self._run(command).split(b"\0"):
            if not record:
                continue
            kind, size, mtime, link, name = record.decode(errors="replace").split("\t", 4)
            reason = unsafe_reason(name)
            if reason:
                listing.refused[name] = reason
                continue
            if kind == "l":
                target = posixpath.join(posixpath.dirname(posixpath.join(self.root, name)), link)
                if not inside(self.root, posixpath.normpath(target)):
                    listing.refused[name] = "it is a symlink pointing out of the folder"
                    continue
                listing.names.add(name)
                # find -printf reports the link itself; its target's size needs a stat.
                entry = self.stat(name)
                if entry is not None:
                    listing.files.append(entry)
                continue
            listing.names.add(name)
            if kind == "f":
                listing.files.append(FileEntry(name, int(size), float(mtime)))
        return listing

    def stat(self, path: str) -> FileEntry | None:
        full = posixpath.join(self.root, check_name(path))
        command = f"find -L {shlex.quote(full)} -maxdepth 0 -type f -printf '%s\\t%T@'"
        try:
            output = self._run(command).decode()
        except ScpError:
            return None
        if not output:
            return None
        size, mtime = output.split("\t")
        return FileEntry(path, int(size), float(mtime))

    def fetch(self, pairs: list[tuple[FileEntry, str]], progress: Progress) -> int:
        for entry, local in pairs:
            self._fetch_one(entry, local, progress)
        return 0  # SCP's protocol has no offset: nothing is ever resumed

    def _fetch_one(self, entry: FileEntry, local: str, progress: Progress) -> None:
        remote = posixpath.join(self.root, check_name(entry.path))
        channel = self._transport.open_session()
        try:
            channel.exec_command(f"scp -f {shlex.quote(remote)}")
            channel.sendall(b"\0")
            header = _read_line(channel)
            if not header.startswith(b"C"):
                raise ScpError(f"scp of {entry.path} failed: {header[1:].decode(errors='replace')}")
            size = int(header.split(b" ", 2)[1])
            channel.sendall(b"\0")
            done = 0
            with open(local, "wb") as out:
                while done < size:
                    chunk = channel.recv(min(CHUNK, size - done))
                    if not chunk:
                        raise ScpError(f"connection closed after {done} of {size} bytes")
                    out.write(chunk)
                    done += len(chunk)
                    progress(entry.path, done, size)
            status = channel.recv(1)
            if status != b"\0":
                raise ScpError(f"scp of {entry.path} ended with an error after the data")
            channel.sendall(b"\0")
        finally:
            channel.close()

    def move(self, path: str, target: str) -> None:
        source = shlex.quote(posixpath.join(self.root, check_name(path)))
        destination = posixpath.join(self.root, check_name(target))
        folder = shlex.quote(posixpath.dirname(destination))
        self._run(f"mkdir -p {folder} && mv -f {source} {shlex.quote(destination)}")

    def remove(self, path: str) -> None:
        self._run(f"rm -f {shlex.quote(posixpath.join(self.root, check_name(path)))}")

    def close(self) -> None:
        self._transport.close()


def _read_line(channel: paramiko.Channel) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = channel.recv(1)
        if not byte:
            break
        line += byte
    return bytes(line)
