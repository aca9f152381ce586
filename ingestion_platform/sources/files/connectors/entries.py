"""What every file transport shares: a listed file, which names are taken, which are refused.

A remote name decides where the file is staged and archived, so a name that could leave
those folders (`..`, an absolute path, a NUL or a newline, a symlink pointing out of the
watched folder) is refused, never cleaned up into something else.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

# Upload tools write under these names and rename when done; such a file is never complete.
DEFAULT_TEMP_SUFFIXES = (".part", ".filepart", ".partial", ".tmp", ".crdownload")


@dataclass(frozen=True)
class FileEntry:
    """One file as listed: its path relative to the watched folder, size and mtime (seconds);
    object stores add the object's ETag and, in a versioned bucket, its version id."""

    path: str
    size: int
    mtime: float
    etag: str | None = None
    version_id: str | None = None

    @property
    def version(self) -> tuple[str, int, float]:
        return (self.path, self.size, self.mtime)


@dataclass
class Listing:
    """The files of one listing, plus the names refused for safety and why."""

    files: list[FileEntry] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    # Every listed name (files and markers), so a done-marker can be found without a stat.
    names: set[str] = field(default_factory=set)


class FileTransport(Protocol):
    """A place files are listed, checked, fetched from, moved and removed (SFTP, SCP, local)."""

    def list(self, recursive: bool) -> Listing: ...

    def stat(self, path: str) -> FileEntry | None: ...

    # Only a transport that lists version ids (S3 in a versioned bucket) has
    # `stat_version(path, version_id) -> FileEntry | None`: a replay reads that exact version.

    def fetch(self, pairs: list[tuple[FileEntry, str]], progress: ProgressFn) -> int:
        """Download each (file, local path); returns the bytes a resumed transfer kept."""
        ...

    def move(self, path: str, target: str) -> str | None:
        """Move within the watched folder; returns the moved file's new ETag, if it has one."""
        ...

    def remove(self, path: str) -> None: ...

    def close(self) -> None: ...


class ProgressFn(Protocol):
    def __call__(self, path: str, done: int, total: int) -> None: ...


class ChangedDuringTransfer(RuntimeError):
    """The remote file is no longer the listed version: never spliced, never retried."""


class UnsafeName(ValueError):
    """A remote name that could escape the staging or archive folder."""


def unsafe_reason(relative: str) -> str | None:
    """Why `relative` must be refused, or None when it is a plain name inside the folder."""
    if any(char in relative for char in ("\x00", "\n", "\r")):
        return "its name contains a NUL or newline character"
    if relative.startswith("/") or relative.startswith("\\"):
        return "its name is absolute"
    parts = relative.replace("\\", "/").split("/")
    if any(part in ("..", ".", "") for part in parts):
        return "its name contains '..', '.' or an empty part"
    return None


def check_name(relative: str) -> str:
    """`relative` unchanged if safe, else UnsafeName naming the reason."""
    reason = unsafe_reason(relative)
    if reason:
        raise UnsafeName(f"refused {relative!r}: {reason}")
    return relative


def inside(root: str, target: str) -> bool:
    """Whether the (resolved, POSIX) `target` lies within `root`."""
    root = posixpath.normpath(root)
    target = posixpath.normpath(target)
    return target == root or target.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class FileFilter:
    """Which listed names are data files: glob patterns, excludes, temp names, markers."""

    patterns: tuple[str, ...] = ("*",)
    excludes: tuple[str, ...] = ()
    temp_suffixes: tuple[str, ...] = DEFAULT_TEMP_SUFFIXES
    done_marker: str | None = None
    # Where landed files are archived to, relative to the watched folder: a recursive
    # listing must never take an archived copy as a new file, whatever the folder's name.
    archive_folder: str | None = None

    def wanted(self, relative: str) -> bool:
        name = posixpath.basename(relative)
        if name.endswith(self.temp_suffixes):
            return False
        if self.archive_folder and inside(self.archive_folder, relative):
            return False
        # Dot-files and dot-folders (the default archive folder among them) are never data.
        if any(part.startswith(".") for part in relative.split("/")):
            return False
        if self.done_marker and name.endswith(self.done_marker):
            return False
        matches = lambda globs: any(  # noqa: E731
            fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(relative, g) for g in globs
        )
        return matches(self.patterns) and not matches(self.excludes)

    def marked_done(self, relative: str, names: set[str]) -> bool:
        return self.done_marker is None or relative + self.done_marker in names


def walk_order(entries: Iterable[FileEntry]) -> Iterator[FileEntry]:
    """Files oldest first (then by name), the order batches are cut in."""
    yield from sorted(entries, key=lambda entry: (entry.mtime, entry.path))
