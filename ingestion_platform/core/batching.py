"""One `batch:` knob for every source: where a batch boundary falls, and what a partition holds.

A boundary is set by time (hour, day, week, any cron) or by size (rows/records, bytes,
files). Time batches become time-window partitions with a schedule; size batches become
dynamic partitions that a sensor cuts once enough new data is pending at the source.

Either way a partition key names an exact slice of the source that can be read again:
a time window, or a cursor range whose bounds are written into the key itself. Keeping
the slice in the key means the Dagster instance (where dynamic partition keys live) is
the manifest: re-running a size partition days later reads the same rows, and no
process memory or side table has to survive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import Field, model_validator

TimeUnit = Literal["minute", "hour", "day", "week", "month"]

_CRON_FOR_UNIT: dict[str, str] = {
    "minute": "* * * * *",
    "hour": "0 * * * *",
    "day": "0 0 * * *",
    "week": "0 0 * * 0",
    "month": "0 0 1 * *",
}
_KEY_FORMAT_FOR_UNIT: dict[str, str] = {
    "minute": "%Y-%m-%dT%H:%M",
    "hour": "%Y-%m-%d-%H:%M",
    "day": "%Y-%m-%d",
    "week": "%Y-%m-%d",
    "month": "%Y-%m-%d",
}
_BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_bytes(value: int | str) -> int:
    """Read `256MB`, `64KiB` or a plain integer as a byte count."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", value)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError(f"cannot read {value!r} as a size; write e.g. 256MB, 64KiB or 1000000")
    return int(match.group(1)) * _BYTE_UNITS[unit]


def parse_duration(value: str | int) -> int:
    """Read `90s`, `15m`, `2h` or `1d` (or plain seconds) as seconds."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", value)
    if match is None:
        raise ValueError(f"cannot read {value!r} as a duration; write e.g. 90s, 15m, 2h or 1d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _fix_when_invalid(valid: dict[str, Any], fix: str, **schema: Any) -> dict[str, Any]:
    """A field's JSON schema whose error message, for a value outside `valid`, is `fix`.

    `dg check yaml` prints only jsonschema's own message ("-5 is less than the minimum of
    1"). A value that fails `valid` must instead match an impossible `const`, and that
    message reads "'<fix>' was expected": the allowed values and the fix, at check time.
    """
    return {**schema, "description": fix, "if": {"not": valid}, "then": {"const": fix}}


def _positive(name: str) -> dict[str, Any]:
    fix = f"a positive number of {name}, e.g. `{name}: 100000`"
    return _fix_when_invalid({"minimum": 1}, fix, type="integer")


_UNITS = "minute, hour, day, week or month"
# What `dg check yaml` checks in `batch:`: each field alone (its combination is checked when
# definitions load, with the same wording as at run time).
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "every": _fix_when_invalid(
        {"enum": ["minute", "hour", "day", "week", "month"]},
        f"one of {_UNITS}, e.g. `every: day`; for other periods use `cron: '0 0 */14 * *'`",
        type="string",
        examples=["minute", "hour", "day", "week", "month"],
    ),
    "rows": _positive("rows"),
    "records": _positive("records"),
    "files": _positive("files"),
    "bytes": _fix_when_invalid(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"pattern": r"^\s*[1-9]\d*\s*[A-Za-z]*\s*$"},
            ]
        },
        "a positive size, e.g. `bytes: 256MB`, `64KiB` or `1000000`",
        type=["integer", "string"],
    ),
    "max_wait": _fix_when_invalid(
        {"pattern": r"^\s*\d+\s*[smhd]\s*$"},
        "a duration, e.g. `max_wait: 15m` (s, m, h or d)",
        type="string",
    ),
}


def checked_batch_schema(schema: dict[str, Any]) -> None:
    """The JSON schema of a `batch:` field, for `dg check yaml` to name the field and the fix.

    Dagster lets a `{{ template }}` string stand in for any nested model, which makes the
    field `anyOf: [BatchSpec, string]`; against that, `dg check yaml` can only say that the
    value "is not valid under any of the given schemas". This replaces the union with
    BatchSpec's own schema (inline: it has no nested models) with each setting checked.
    """
    model = BatchSpec.model_json_schema()
    model["properties"].update(_FIELD_SCHEMAS)
    schema.clear()
    schema.update(model)


class BatchSpec(dg.Model):
    """Where one batch ends and the next begins: by time (`every`/`cron`) or by size."""

    every: TimeUnit | None = None
    cron: str | None = None
    start: str | None = None
    timezone: str = "UTC"
    rows: int | None = None
    records: int | None = None
    bytes: int | str | None = None
    files: int | None = None
    max_wait: str | None = None

    @model_validator(mode="after")
    def _exactly_one_boundary(self) -> BatchSpec:
        chosen = [
            name
            for name in ("every", "cron", "rows", "records", "bytes", "files")
            if getattr(self, name) is not None
        ]
        if len(chosen) != 1:
            raise ValueError(
                f"batch: set exactly one boundary, found {chosen or 'none'}; use one of "
                "`every: hour|day|week|month|minute`, `cron: '*/5 * * * *'`, `rows: N`, "
                "`records: N`, `bytes: 256MB` or `files: N`"
            )
        if self.is_time and not self.start:
            raise ValueError(
                "batch.start: a time batch needs a first window, e.g. `start: 2026-01-01`"
            )
        if self.start:
            _parse_start(self.start)
        for name in ("rows", "records", "files"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(
                    f"batch.{name}: must be a positive number of {name}, got {value}; "
                    f"write e.g. `{name}: 100000`"
                )
        if self.bytes is not None and parse_bytes(self.bytes) <= 0:
            raise ValueError(f"batch.bytes: must be a positive size, got {self.bytes}; e.g. 256MB")
        if self.max_wait is not None:
            if self.is_time:
                raise ValueError("batch.max_wait: only applies to size batches (rows, bytes, ...)")
            parse_duration(self.max_wait)
        return self

    @property
    def is_time(self) -> bool:
        return self.every is not None or self.cron is not None

    @property
    def size_unit(self) -> Literal["rows", "bytes", "files"]:
        """The unit a size batch counts in; `records` is the same count as `rows`."""
        if self.bytes is not None:
            return "bytes"
        if self.files is not None:
            return "files"
        return "rows"

    @property
    def size_threshold(self) -> int:
        if self.bytes is not None:
            return parse_bytes(self.bytes)
        value = self.rows or self.records or self.files
        assert value is not None, "size_threshold asked of a time batch"
        return value

    @property
    def max_wait_seconds(self) -> int | None:
        return parse_duration(self.max_wait) if self.max_wait else None

    def partitions_def(self, dynamic_name: str) -> dg.PartitionsDefinition:
        """Time windows for a time batch; named dynamic partitions for a size batch."""
        if not self.is_time:
            return dg.DynamicPartitionsDefinition(name=dynamic_name)
        cron = self.cron or _CRON_FOR_UNIT[self.every or ""]
        fmt = _KEY_FORMAT_FOR_UNIT[self.every] if self.every else _cron_key_format(cron)
        start = _parse_start(self.start or "")
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule=cron, start=start.strftime(fmt), fmt=fmt, timezone=self.timezone
        )


# `batch: CheckedBatch` in a component: `dg check yaml` then checks each setting.
CheckedBatch = Annotated[BatchSpec, Field(json_schema_extra=checked_batch_schema)]


def scheduled_definitions(
    source: str, assets: list[dg.AssetsDefinition], running: bool
) -> dg.Definitions:
    """Time-batched assets, plus a schedule `<source>__schedule` that runs each window once it
    closes; like any schedule it is switched on or off in the UI."""
    partitions_defs = {asset.partitions_def for asset in assets}
    window = partitions_defs.pop() if len(partitions_defs) == 1 else None
    if not isinstance(window, dg.TimeWindowPartitionsDefinition):
        raise ValueError(f"{source}: a schedule needs assets with one time-window partitioning")
    keys = [key for asset in assets for key in asset.keys]
    checks = [check for asset in assets for check in asset.check_keys]
    # A job of the source's own assets, because the UI shows a schedule on an asset only
    # through a job other than the implicit asset job (#18: "No automations found").
    job = dg.define_asset_job(
        f"{source}__job",
        selection=keys,
        partitions_def=window,
        description=f"Lands {source}'s tables, one window per partition.",
    )
    schedule = dg.ScheduleDefinition(
        name=f"{source}__schedule",
        cron_schedule=window.cron_schedule,
        execution_timezone=window.timezone,
        job=job,
        execution_fn=_closed_window_request(window, keys, checks),
        default_status=dg.DefaultScheduleStatus.RUNNING
        if running
        else dg.DefaultScheduleStatus.STOPPED,
        description=f"Lands each window of {source} once it closes: "
        + ", ".join(key.to_user_string() for key in keys),
    )
    return dg.Definitions(assets=assets, jobs=[job], schedules=[schedule])


def _closed_window_request(
    window: dg.TimeWindowPartitionsDefinition,
    keys: list[dg.AssetKey],
    checks: list[dg.AssetCheckKey],
) -> Callable[[dg.ScheduleEvaluationContext], dg.RunRequest | dg.SkipReason]:
    """What `build_schedule_from_partitioned_job` asks for: the window that closed at the tick."""

    def request(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
            key = window.get_last_partition_key()
        if key is None:
            return dg.SkipReason(f"the first window, from {window.start:%Y-%m-%d %H:%M}, is open")
        # One run per window and schedule, however often the tick is retried.
        return dg.RunRequest(
            run_key=key, partition_key=key, asset_selection=keys, asset_check_keys=checks
        )

    return request


def _parse_start(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(
            f"batch.start: cannot read {value!r} as a date; write e.g. 2026-01-01 "
            "or 2026-01-01T06:00"
        ) from None
    return parsed if isinstance(parsed, datetime) else datetime.combine(parsed, date.min.time())


def _cron_key_format(cron: str) -> str:
    minute, hour = cron.split()[:2]
    if minute == "0" and hour == "0":
        return "%Y-%m-%d"
    return "%Y-%m-%dT%H:%M"


@dataclass(frozen=True)
class CursorSlice:
    """Rows whose cursor is after `lo` (exclusive; None = from the start) up to `hi` (inclusive).

    The key is `lo..hi`, e.g. `1000..2000` or `..2026-01-02T10:00:00+00:00`, so a partition
    key alone is enough to read the slice again.
    """

    lo: int | datetime | None
    hi: int | datetime

    @property
    def key(self) -> str:
        return f"{_render(self.lo)}..{_render(self.hi)}"

    @classmethod
    def from_key(cls, key: str) -> CursorSlice:
        lo, sep, hi = key.partition("..")
        if not sep or not hi:
            raise ValueError(f"partition key {key!r} is not a cursor range like `1000..2000`")
        return cls(lo=_parse_bound(lo) if lo else None, hi=_parse_bound(hi))


def _render(value: int | datetime | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _parse_bound(text: str) -> int | datetime:
    try:
        return int(text)
    except ValueError:
        return datetime.fromisoformat(text)


def latest_slice_end(keys: list[str]) -> int | datetime | None:
    """The high-water mark: where the newest cut slice ends, or None before the first cut."""
    return CursorSlice.from_key(keys[-1]).hi if keys else None
