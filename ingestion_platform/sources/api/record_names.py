"""Each API record's keys as they land: renamed where `rename:` says, and never two as one.

dlt lands `userId` and `user_id` as one column `user_id`, keeping the last value and
dropping the other without a word. A record whose keys would land as one column fails the
run, naming the keys and the `rename:` that keeps both.
"""

from __future__ import annotations

from typing import Any

from ingestion_platform.core.column_names import describe_clash, record_clashes
from ingestion_platform.sources.api.connectors.rest_api import ApiError


class RecordNames:
    """A dlt map for one resource: renames its records' top-level keys, then checks them."""

    def __init__(self, resource: str, rename: dict[str, str]) -> None:
        self.resource = resource
        self.rename = rename

    def __call__(self, record: Any) -> Any:
        if not isinstance(record, dict):
            return record
        if self.rename:
            renamed = {self.rename.get(key, key): value for key, value in record.items()}
            if len(renamed) < len(record):
                taken = [key for key in self.rename.values() if key in record]
                raise ApiError(
                    f"resource {self.resource!r}: `rename` gives a record's key the name "
                    f"{taken[0]!r}, which the record already has; nothing was landed",
                    f"rename it to a name the API does not use, under resources "
                    f"({self.resource}).rename",
                )
            record = renamed
        clashes = record_clashes(record)
        if clashes:
            first = next(iter(clashes.values()))[0]
            raise ApiError(
                f"resource {self.resource!r}: a record's keys {describe_clash(clashes)}, so "
                "one of their values would be lost; nothing was landed",
                f"give one of them a name of its own with `rename: {{{first}: <new name>}}` "
                f"under the resource {self.resource!r} (top-level keys only)",
            )
        return record
