"""Files dropped by hand into a folder on this machine (the local inbox)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ingestion_platform.sources.files.connectors.entries import (
    FileEntry,
    Listing,
    check_name,
    inside,
    unsafe_reason,
)

Progress = Callable[[str, int, int], None]


class LocalFiles:
    """A watched folder on the local filesystem."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).absolute()
        if not self.root.is_dir():
            raise FileNotFoundError(f"folder {self.root} does not exist")
        self._real_root = os.path.realpath(self.root)

    def list(self, recursive: bool) -> Listing:
        listing = Listing()
        folders = [""]
        while folders:
            folder = folders.pop()
            with os.scandir(self.root / folder) as entries:
                for item in entries:
                    relative = f"{folder}/{item.name}" if folder else item.name
                    reason = unsafe_reason(relative)
                    if reason:
                        listing.refused[relative] = reason
                        continue
                    if item.is_symlink() and not self._points_inside(relative):
                        listing.refused[relative] = "it is a symlink pointing out of the folder"
                        continue
                    listing.names.add(relative)
                    if item.is_dir():
                        if recursive:
                            folders.append(relative)
                    elif item.is_file():
                        info = item.stat()
                        listing.files.append(FileEntry(relative, info.st_size, info.st_mtime))
        return listing

    def _points_inside(self, relative: str) -> bool:
        return inside(self._real_root, os.path.realpath(self.root / relative))

    def stat(self, path: str) -> FileEntry | None:
        check_name(path)
        full = self.root / path
        if full.is_symlink() and not self._points_inside(path):
            return None
        try:
            info = full.stat()
        except FileNotFoundError:
            return None
        return FileEntry(path, info.st_size, info.st_mtime)

    def fetch(self, pairs: list[tuple[FileEntry, str]], progress: Progress) -> int:
        # A copy, not the file itself: the reader then sees one snapshot even if someone
        # overwrites the original meanwhile (the size check afterwards catches that).
        for entry, local in pairs:
            shutil.copyfile(self.root / check_name(entry.path), local)
            progress(entry.path, entry.size, entry.size)
        return 0

    def move(self, path: str, target: str) -> None:
        destination = self.root / check_name(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / check_name(path), destination)

    def remove(self, path: str) -> None:
        (self.root / check_name(path)).unlink()

    def close(self) -> None:
        pass
