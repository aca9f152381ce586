"""Which time partition each row belongs to, when one run covers a range of partitions.

A single-run backfill reads many windows in one query; each row must still carry the key
of its own window, so that re-materialising one partition later replaces exactly its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def key_assigner(context: dg.AssetExecutionContext, cursor: Sequence[str]) -> Any:
    """The batch key(s) of a batch: constant in a one-partition run, else placed by `cursor`.

    `cursor` lists the cursor column and its fallbacks; a row is placed by the first non-NULL.
    """
    keys = list(context.partition_keys)
    if len(keys) == 1:
        return lambda _batch: keys[0]
    partitions_def = context.assets_def.partitions_def
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    starts = [partitions_def.time_window_for_partition_key(key).start for key in keys]
    return WindowKeys(keys, starts, cursor)


class WindowKeys:
    """Maps cursor values to the key of the window whose start is the last one before them."""

    def __init__(self, keys: list[str], starts: list[datetime], cursor: Sequence[str]) -> None:
        self.keys = np.array(keys, dtype=object)
        self.cursor = list(cursor)
        self.aware_starts = np.array([_epoch_us(s.astimezone(UTC)) for s in starts])
        # A naive (zone-less) source column holds wall-clock time in the batch's timezone.
        self.naive_starts = np.array([_epoch_us(s.replace(tzinfo=UTC)) for s in starts])

    def __call__(self, item: Any) -> pa.Array | str:
        if isinstance(item, dict):
            value = next((item[name] for name in self.cursor if item[name] is not None), None)
            return self._key_of_value(value)
        columns = [item.column(name) for name in self.cursor]
        column = columns[0] if len(columns) == 1 else pc.coalesce(*columns)
        if pa.types.is_date(column.type):
            column = pc.cast(column, pa.timestamp("us"))
        aware = getattr(column.type, "tz", None) is not None
        micros = pc.cast(pc.cast(column, pa.timestamp("us", tz=column.type.tz)), pa.int64())
        starts = self.aware_starts if aware else self.naive_starts
        positions = np.searchsorted(starts, micros.to_numpy(zero_copy_only=False), "right") - 1
        return pa.array(self.keys[positions], pa.string())

    def _key_of_value(self, value: datetime | date) -> str:
        if not isinstance(value, datetime):
            value = datetime.combine(value, datetime.min.time())
        aware = value.tzinfo is not None
        starts = self.aware_starts if aware else self.naive_starts
        micros = _epoch_us(value.astimezone(UTC) if aware else value.replace(tzinfo=UTC))
        return str(self.keys[int(np.searchsorted(starts, micros, "right")) - 1])


def _epoch_us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)
