"""One Glue partition run: find or start the job run, follow it to its end, land its output.

A partition's job run id is recorded in the Dagster instance's key-value storage (the table
behind sensor cursors), where every process of a deployment reaches it. Before a job run is
started, an intent (the marker argument it will carry, no id yet) is recorded for its
partitions; the id follows as soon as StartJobRun answers. So a later run of the partition
finds the job run still going by its id, or, if a process died between StartJobRun and
recording the id, by listing the job's runs (GetJobRuns) for one carrying the intent's
marker, and attaches to it instead of starting the extraction twice. Listing is needed
only in that window, so a job with a long history is not listed on every run.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import dagster as dg

from ingestion_platform.core.instant_formats import format_bound
from ingestion_platform.sources.glue.connectors.glue import GlueJobs, JobRun

MARKER_ARGUMENT = "--ingestion_partition"
TEMPLATE_FIELDS = ("start", "end", "partition_key")
_PREFIX = "ingestion_platform/glue"
LOG_EVERY_SECONDS = 60.0


class _Template(string.Formatter):
    """`str.format` where a bare `{start}` is ISO 8601 (`{start:%Y-%m-%d}` formats as usual)."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, datetime):
            return format_bound(value, format_spec) if format_spec else value.isoformat()
        return super().format_field(value, format_spec)


def render(template: str, start: datetime, end: datetime, partition_key: str) -> str:
    return _Template().format(template, start=start, end=end, partition_key=partition_key)


def template_problem(template: str) -> str | None:
    """Why `template` cannot be rendered for a window, or None if it can."""
    try:
        fields = {name for _, name, _, _ in _Template().parse(template) if name is not None}
    except ValueError as error:
        return f"cannot read {template!r} as a template ({error})"
    unknown = sorted(fields - set(TEMPLATE_FIELDS))
    if unknown:
        allowed = ", ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS)
        return f"{template!r} uses {{{unknown[0]}}}, which is not one of {allowed}"
    try:
        render(template, datetime(2026, 1, 1), datetime(2026, 1, 2), "2026-01-01")
    except (ValueError, TypeError) as error:
        return f"cannot render {template!r}: {error}"
    return None


def varies_by_partition(template: str) -> bool:
    return render(template, datetime(2026, 1, 1), datetime(2026, 1, 2), "a") != render(
        template, datetime(2026, 1, 2), datetime(2026, 1, 3), "b"
    )


@dataclass(frozen=True)
class Window:
    """A partition and the time window it covers."""

    key: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Finished:
    """A job run that SUCCEEDED, the partitions it produced, and how long this run waited."""

    run: JobRun
    windows: list[Window]
    waited_seconds: float


@dataclass(frozen=True)
class RunRecord:
    """The job run a partition's data comes from: its marker, and its id once started."""

    marker: str
    run_id: str | None = None


class RunRecords:
    """Each partition's job run, in the instance's key-value storage."""

    def __init__(self, instance: dg.DagsterInstance, partitions_name: str) -> None:
        self.storage = instance.run_storage
        self.prefix = f"{_PREFIX}/{partitions_name}/run/"

    def get(self, key: str) -> RunRecord | None:
        name = self.prefix + key
        payload = self.storage.get_cursor_values({name}).get(name)
        return RunRecord(**json.loads(payload)) if payload else None

    def put(self, keys: Iterable[str], record: RunRecord) -> None:
        payload = json.dumps(asdict(record))
        self.storage.set_cursor_values({self.prefix + key: payload for key in keys})


def marker(partitions_name: str, windows: list[Window]) -> str:
    """The value of MARKER_ARGUMENT: which asset and partitions a job run is for."""
    first, last = windows[0].key, windows[-1].key
    return f"{partitions_name}/{first}" if first == last else f"{partitions_name}/{first}..{last}"


def active_run(
    jobs: GlueJobs, records: RunRecords, key: str, log: dg.DagsterLogManager
) -> JobRun | None:
    """The still-active job run recorded for `key`, found by id or by its intent's marker."""
    record = records.get(key)
    if record is None:
        return None
    if record.run_id is None:
        found = jobs.find_active(MARKER_ARGUMENT, record.marker)
        if found is None:
            return None
        log.info(
            f"found job run {found.run_id} ({found.state}) by its marker {record.marker!r}: "
            "it was started by a run that ended before recording it"
        )
        records.put([key], RunRecord(record.marker, found.run_id))
        return found
    run = jobs.find(record.run_id)
    return run if run is not None and run.active else None


def start_run(
    jobs: GlueJobs,
    records: RunRecords,
    partitions_name: str,
    windows: list[Window],
    arguments: dict[str, str],
) -> str:
    """Start one job run for `windows` (consecutive), recording the intent first, then the id."""
    start, end = windows[0].start, windows[-1].end
    key = windows[0].key if len(windows) == 1 else f"{windows[0].key}..{windows[-1].key}"
    rendered = {name: render(value, start, end, key) for name, value in arguments.items()}
    mark = marker(partitions_name, windows)
    keys = [w.key for w in windows]
    records.put(keys, RunRecord(mark))
    run_id = jobs.start({**rendered, MARKER_ARGUMENT: mark})
    records.put(keys, RunRecord(mark, run_id))
    return run_id


def consecutive(windows: list[Window]) -> list[list[Window]]:
    """`windows` (in order) split where one does not end where the next starts."""
    groups: list[list[Window]] = []
    for window in windows:
        if groups and groups[-1][-1].end == window.start:
            groups[-1].append(window)
        else:
            groups.append([window])
    return groups


class ProgressLog:
    """Logs a followed job run's state when it changes, and at least once a minute."""

    def __init__(self, log: dg.DagsterLogManager, job_name: str) -> None:
        self.log = log
        self.job_name = job_name
        self.last: tuple[str, float] | None = None

    def __call__(self, run: JobRun, elapsed: float) -> None:
        if self.last and self.last[0] == run.state and elapsed - self.last[1] < LOG_EVERY_SECONDS:
            return
        self.last = (run.state, elapsed)
        self.log.info(
            f"Glue job {self.job_name!r} run {run.run_id}: {run.state} after {elapsed:,.0f}s"
        )
