"""Source values DuckDB's scanners land as another value, unseen, and how a slice is checked
for them after its insert.

- MySQL's zero date (`0000-00-00`) lands as NULL: no date type holds it.
- PostgreSQL's `NaN` in a `numeric(p,s)` column lands as 0: no DECIMAL holds it.

Reading a flag with every row cost about 0.4 s per 2M MariaDB rows (bench/README.md), and a
server-side guard would make PostgreSQL read the slice as one query instead of in parallel.
So the landed rows are checked instead: such a value can only have landed as the NULL or 0
it becomes, so only when a column landed one does the server count the real ones, with one
aggregate over the slice (the scan's bounds; the engine's sessions are in UTC, as the
scan's). A value changed at the source between the scan and the count lands as what the
failure's fix (a view with `nullif`) would have landed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ingestion_platform.sources.sql.connectors.scanner import ScanColumn, ScanPlan
from ingestion_platform.sources.sql.connectors.sql_database import (
    CursorColumn,
    SliceBounds,
    SourceReadError,
    bounded,
)


@dataclass(frozen=True)
class BlindSpot:
    """A column whose source values of one kind the scanner lands as another value."""

    column: ScanColumn
    lands_as_null: bool  # else it lands as 0
    # The server's condition on the source column that finds such a value.
    at_source: Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]]
    problem: str  # what the column holds, for the failure
    value: str  # the value as SQL, for the fix's `nullif`

    def landed_as(self, column: str) -> str:
        """DuckDB's condition on the landed `column` that such a value meets once landed."""
        return f"{column} is null" if self.lands_as_null else f"{column} = 0"

    def failure(self) -> SourceReadError:
        name = self.column.source_name
        return SourceReadError(
            f"column {name!r} {self.problem}. Fix: read the table through a view that turns "
            f"it into NULL, e.g. `nullif({name}, {self.value}) as {name}` in place of the column"
        )


def blind_spots(plan: ScanPlan) -> list[BlindSpot]:
    """The plan's columns that may hold a value the scanner would land as another one."""
    kind = plan.source.kind
    source_columns = {c.name: c for c in plan.table.columns if c.name not in plan.rewrites}
    found = []
    for column in plan.columns:
        source = source_columns.get(column.source_name)
        if source is None:
            continue
        if kind == "mysql" and isinstance(source.type, sa.Date | sa.DateTime):
            found.append(
                BlindSpot(
                    column,
                    True,
                    lambda c: c == sa.literal_column("0"),
                    "holds MySQL's zero date ('0000-00-00'), which no date type can hold",
                    "0",
                )
            )
        elif (
            kind == "postgres"
            and isinstance(source.type, sa.Numeric)
            and not isinstance(source.type, sa.Float)
        ):
            found.append(
                BlindSpot(
                    column,
                    False,
                    lambda c: c == sa.literal_column("'NaN'"),
                    f"holds NaN, which a DECIMAL({source.type.precision},{source.type.scale}) "
                    "cannot hold",
                    "'NaN'",
                )
            )
    return found


# At most this many landed rows are looked up by primary key; more, and the server counts
# over the whole slice.
MAX_KEYS = 1000


def lookup_key(plan: ScanPlan) -> ScanColumn | None:
    """The source table's one-column primary key, if it has one and it is scanned."""
    keys = list(plan.table.primary_key.columns)
    if len(keys) != 1:
        return None
    return next((c for c in plan.columns if c.source_name == keys[0].name), None)


def raise_if_found(
    spots: list[BlindSpot],
    plan: ScanPlan,
    engine: sa.Engine,
    cursor: CursorColumn,
    bounds: SliceBounds,
    keys: list[Any] | None = None,
) -> None:
    """Fail with the first of `spots` whose kind of value the slice holds at the source;
    `keys` (lookup_key's values of the landed rows that may be one) narrows the count to
    those rows, an index lookup instead of a pass over the slice."""
    if not spots:
        return
    table = plan.table
    counts = [
        sa.func.coalesce(
            sa.func.sum(sa.case((spot.at_source(table.c[spot.column.source_name]), 1), else_=0)),
            0,
        )
        for spot in spots
    ]
    query = bounded(sa.select(*counts), table, cursor, bounds)
    key = lookup_key(plan)
    if keys is not None and key is not None:
        query = query.where(table.c[key.source_name].in_(keys))
    with engine.connect() as connection:
        found = connection.execute(query).one()
    for spot, count in zip(spots, found, strict=True):
        if count:
            raise spot.failure()
