"""Each API record's keys as they land: renamed where `rename:` says, and never two as one.

dlt lands `userId` and `user_id` as one column `user_id`, keeping the last value and
dropping the other without a word. A record whose keys would land as one column fails the
run, naming the keys and the `rename:` that keeps both.
"""

from __future__ import annotations

from typing import Any

from ingestion_platform.core.column_names import (
    describe_clash,
    describe_taken,
    record_clashes,
    taken_names,
)
from ingestion_platform.core.warehouse import BATCH_KEY_COLUMN, LOADED_AT_COLUMN
from ingestion_platform.sources.api.connectors.rest_api import ApiError

# Columns the landing (and dlt) write on every row: a record's own key may not land as one.
_OWN_COLUMNS = (BATCH_KEY_COLUMN, LOADED_AT_COLUMN, "_dlt_id", "_dlt_load_id")


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
        taken = taken_names(record, _OWN_COLUMNS)
        if taken:
            name = next(iter(taken))
            raise ApiError(
                f"resource {self.resource!r}: a record's key {describe_taken(taken)}; "
                "nothing was landed",
                f"give it a name of its own with `rename: {{{name}: <new name>}}` under the "
                f"resource {self.resource!r}",
            )
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
