"""Files on a server that has no SFTP subsystem but allows the legacy SCP protocol.

Fetching speaks SCP's source protocol (`scp -f`) on a paramiko exec channel, with the same
verified transport as SFTP. Our own channel rather than the `scp` package: that package
writes the file under the name the server sends, and here every local name is ours.
Listing runs `find … -printf` (GNU find) on the server: one command per listing, giving
type, size, mtime and name of every entry, NUL-separated so any name survives. A symlink
is resolved on the server (`realpath`, which follows every link in the chain, folders
included) and refused when its target lies outside the watched folder, as SFTP and the
local inbox refuse it. Archive and delete run `mv` / `rm` with shell-quoted names.
A channel that receives nothing for `stall_seconds` fails the transfer (TransferStalled).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable

import paramiko

from ingestion_platform.sources.files.connectors.entries import (
    FileEntry,
    Listing,
    check_name,
    inside,
    unsafe_reason,
)
from ingestion_platform.sources.files.connectors.ssh import (
    SshSettings,
    TransferStalled,
    open_transport,
)

CHUNK = 1 << 20
# type, size, mtime, link text (symlinks only), path relative to the start folder
FIND_FORMAT = r"%y\t%s\t%T@\t%l\t%P\0"
# Links resolved per command: keeps the command line far below the server's limit.
LINKS_PER_COMMAND = 200
# For each quoted path: NUL, then its resolved target's type, size, mtime and real path
# (nothing after the NUL when it does not resolve). `$(…)` only strips newlines, which a
# listed name never holds.
RESOLVE = (
    "for f in {names}; do printf '\\0'; r=$(realpath -e -- \"$f\" 2>/dev/null) && "
    "find \"$r\" -maxdepth 0 -printf '%y\\t%s\\t%T@\\t%p'; done; true"
)

Progress = Callable[[str, int, int], None]


class ScpError(OSError):
    """The server's scp or shell reported a failure."""


class ScpFiles:
    """A watched folder on an SCP-only server."""

    def __init__(self, settings: SshSettings, root: str, stall_seconds: float = 300) -> None:
        self.settings = settings
        self.root = posixpath.normpath(root)
        self.stall_seconds = stall_seconds
        self._transport = open_transport(settings)
        resolved = self._resolve([self.root]).get(self.root)
        self._real_root = resolved[3] if resolved else self.root

    def _run(self, command: str) -> bytes:
        channel = self._transport.open_session()
        channel.settimeout(self.stall_seconds)
        try:
            channel.exec_command(command)
            output = bytearray()
            while chunk := channel.recv(CHUNK):
                output += chunk
            errors = channel.makefile_stderr("rb").read().decode(errors="replace")
            status = channel.recv_exit_status()
        except TimeoutError:
            raise TransferStalled(
                f"the server sent nothing for {self.stall_seconds:g}s while running "
                f"`{command[:80]}`. Fix: check the server and the network, or raise "
                "transfer_timeout if it is only slow"
            ) from None
        finally:
            channel.close()
        if status != 0:
            raise ScpError(f"`{command}` failed on the server ({status}): {errors.strip()}")
        return bytes(output)

    def list(self, recursive: bool) -> Listing:
        depth = "" if recursive else "-maxdepth 1 "
        command = f"find {shlex.quote(self.root)} -mindepth 1 {depth}-printf '{FIND_FORMAT}'"
        listing = Listing()
        links: list[str] = []
        for record in self._run(command).split(b"\0"):
            if not record:
                continue
            kind, size, mtime, link, name = record.decode(errors="replace").split("\t", 4)
            reason = unsafe_reason(name)
            if reason:
                listing.refused[name] = reason
                continue
            if kind == "l":
                links.append(name)
                continue
            listing.names.add(name)
            if kind == "f":
                listing.files.append(FileEntry(name, int(size), float(mtime)))
        # A link's text says little (`a -> sub/x` with `sub -> /elsewhere`): the server
        # resolves the whole chain, and only a target inside the folder is taken.
        targets = self._resolve([posixpath.join(self.root, name) for name in links])
        for name in links:
            target = targets.get(posixpath.join(self.root, name))
            if target is None or not inside(self._real_root, target[3]):
                listing.refused[name] = "it is a symlink pointing out of the folder"
                continue
            kind, size, mtime, _ = target
            listing.names.add(name)
            if kind == "f":
                listing.files.append(FileEntry(name, int(size), float(mtime)))
        return listing

    def _resolve(self, paths: list[str]) -> dict[str, tuple[str, str, str, str]]:
        """Path → (type, size, mtime, real path) of what it resolves to; absent if nothing."""
        found: dict[str, tuple[str, str, str, str]] = {}
        for start in range(0, len(paths), LINKS_PER_COMMAND):
            chunk = paths[start : start + LINKS_PER_COMMAND]
            names = " ".join(shlex.quote(path) for path in chunk)
            answers = self._run(RESOLVE.format(names=names)).split(b"\0")[1:]
            for path, answer in zip(chunk, answers, strict=True):
                if answer:
                    kind, size, mtime, real = answer.decode(errors="replace").split("\t", 3)
                    found[path] = (kind, size, mtime, real)
        return found

    def stat(self, path: str) -> FileEntry | None:
        full = posixpath.join(self.root, check_name(path))
        target = self._resolve([full]).get(full)
        if target is None or target[0] != "f" or not inside(self._real_root, target[3]):
            return None  # gone, not a file, or (through a link) outside the folder
        return FileEntry(path, int(target[1]), float(target[2]))

    def fetch(self, pairs: list[tuple[FileEntry, str]], progress: Progress) -> int:
        for entry, local in pairs:
            self._fetch_one(entry, local, progress)
        return 0  # SCP's protocol has no offset: nothing is ever resumed

    def _fetch_one(self, entry: FileEntry, local: str, progress: Progress) -> None:
        remote = posixpath.join(self.root, check_name(entry.path))
        channel = self._transport.open_session()
        channel.settimeout(self.stall_seconds)
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
        except TimeoutError:
            raise TransferStalled(
                f"downloading {entry.path} stalled: no data for {self.stall_seconds:g}s. Fix: "
                "check the server and the network, or raise transfer_timeout if it is only slow"
            ) from None
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
