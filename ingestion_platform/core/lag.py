"""Lag at the source: what waits there that no partition holds yet, and for how long.

Every other health check looks at what landed. This one looks at the source itself, with
code of each kind's own that lists or queries it and compares the answer with the
partitions that exist, never with the code that decides cuts. A cutting bug (a sensor
that never fires, a shard never read to its end) therefore shows up here as data waiting
longer than its batch allows, instead of in a user's numbers.

Each landing table gets an asset check `source_lag`. A sensor `<source>__lag` measures the
source every minute or so and reports the check's result and the figures (an observation
the UI plots) without a run; the check can also be executed from the UI. The check:
- passes while nothing waits, or the oldest waiting item is younger than the batch period
  plus its grace (a time batch, or a size batch with `max_wait`); a size batch without
  `max_wait` only warns once a whole batch waits past the grace;
- warns (WARN) past that, and fails as an ERROR a batch period later;
- warns when the source cannot be measured (unreachable), naming why.
"""

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from ingestion_platform.core.batching import BatchSpec
from ingestion_platform.core.health import HealthSpec, freshness_window, grace

SOURCE_LAG = "source_lag"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceLag:
    """What waits at the source that no partition holds yet.

    `oldest_waiting_at` is when the oldest waiting item arrived (a file's mtime, a record's
    arrival time, a row's cursor; a closed window not landed counts from its start). None
    when nothing waits, or when the source cannot tell: the sensor then counts from when it
    first saw the wait.
    """

    waiting: int
    unit: str
    oldest_waiting_at: datetime | None = None
    detail: Mapping[str, int | float | str] = field(default_factory=dict)
    # For a batch in bytes: how many bytes wait (None when the kind cannot tell cheaply).
    waiting_bytes: int | None = None
    # Of `waiting`, how many no future run will land (rows that reached a slice after it
    # landed); they count however few, and `note` says what lands them.
    stranded: int = 0
    note: str | None = None


LagMeasure = Callable[[dg.DagsterInstance], SourceLag]


@dataclass(frozen=True)
class LagRule:
    """How long data may wait at one source before its lag check warns, then fails."""

    warn_after: timedelta
    fail_after: timedelta
    # A size batch without max_wait: a wait is late only once a whole batch is waiting.
    whole_batch: int | None = None
    unit: str = ""

    @classmethod
    def of(cls, batch: BatchSpec, health: HealthSpec, sensor_interval_seconds: int) -> "LagRule":
        window = freshness_window(batch, health, sensor_interval_seconds)
        if window is not None:
            period = window - grace(batch, health, sensor_interval_seconds)
            return cls(warn_after=window, fail_after=window + period)
        spare = grace(batch, health, sensor_interval_seconds) + timedelta(
            seconds=sensor_interval_seconds
        )
        return cls(spare, 3 * spare, batch.size_threshold, batch.size_unit)

    def judge(self, lag: SourceLag, age: timedelta | None) -> tuple[bool, dg.AssetCheckSeverity]:
        """(passed, severity) for `lag` whose oldest item has waited `age`."""
        if lag.waiting == 0 or age is None:
            return True, dg.AssetCheckSeverity.WARN
        if self.whole_batch is not None and not lag.stranded:
            held = lag.waiting_bytes if self.unit == "bytes" else lag.waiting
            if held is None or held < self.whole_batch:
                return True, dg.AssetCheckSeverity.WARN
        if age <= self.warn_after:
            return True, dg.AssetCheckSeverity.WARN
        late = age > self.fail_after
        return False, dg.AssetCheckSeverity.ERROR if late else dg.AssetCheckSeverity.WARN


def lag_check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SOURCE_LAG,
        asset=asset_key,
        description="Data waiting at the source that no partition holds yet, and its age.",
    )


def evaluate(
    asset_key: dg.AssetKey,
    measure: LagMeasure,
    instance: dg.DagsterInstance,
    rule: LagRule,
    now: datetime,
    waiting_since: datetime | None = None,
) -> tuple[dg.AssetCheckEvaluation, datetime | None]:
    """Measure one table's source and judge it; also returns since when data has waited."""
    try:
        lag = measure(instance)
    except Exception as error:  # an unreachable source is a finding, not a crashed sensor
        logger.warning("%s: lag not measured: %s", asset_key.to_user_string(), error)
        return (
            dg.AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=SOURCE_LAG,
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"could not measure the source: {error}",
                metadata={},
            ),
            waiting_since,
        )
    since = lag.oldest_waiting_at or (waiting_since or now if lag.waiting else None)
    age = now - since if since else None
    passed, severity = rule.judge(lag, age)
    figures = lag_metadata(lag, age)
    description = None
    if not passed:
        description = (
            f"{lag.waiting} {lag.unit} wait at the source; the oldest for "
            f"{_round(age)}, longer than the batch allows ({_round(rule.warn_after)})"
        )
        if lag.note:
            description += f"; {lag.note}"
    evaluation = dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=SOURCE_LAG,
        passed=passed,
        severity=severity,
        metadata=figures,
        description=description,
    )
    # Only an age the source cannot tell is carried from tick to tick.
    return evaluation, since if lag.waiting and lag.oldest_waiting_at is None else None


def lag_metadata(lag: SourceLag, age: timedelta | None) -> dict[str, dg.MetadataValue]:
    """The figures the UI plots: how much waits and the oldest's age in seconds."""
    figures: dict[str, dg.MetadataValue] = {
        f"waiting_{lag.unit}": dg.MetadataValue.int(lag.waiting),
        "oldest_waiting_seconds": dg.MetadataValue.float(
            round(age.total_seconds(), 3) if age else 0.0
        ),
    }
    if lag.waiting_bytes is not None:
        figures["waiting_bytes"] = dg.MetadataValue.int(lag.waiting_bytes)
    if lag.detail:
        figures["detail"] = dg.MetadataValue.json(dict(lag.detail))
    return figures


def lag_defs(
    *,
    source: str,
    measures: Mapping[dg.AssetKey, LagMeasure],
    batch: BatchSpec,
    health: HealthSpec,
    sensor_interval_seconds: int,
) -> dg.Definitions:
    """The `source_lag` check of each landing table, and the sensor that evaluates them."""
    if not health.lag or not measures:
        return dg.Definitions()
    rule = LagRule.of(batch, health, sensor_interval_seconds)
    keys = list(measures)

    @dg.multi_asset_check(
        specs=[lag_check_spec(key) for key in keys],
        name=f"{source}__source_lag",
        can_subset=True,
    )
    def _lag_check(context: dg.AssetCheckExecutionContext):  # type: ignore[no-untyped-def]
        """Measures what waits at the source, as the lag sensor does."""
        now = datetime.now(UTC)
        for key in keys:
            if dg.AssetCheckKey(key, SOURCE_LAG) not in context.selected_asset_check_keys:
                continue
            evaluation, _ = evaluate(key, measures[key], context.instance, rule, now)
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=SOURCE_LAG,
                passed=evaluation.passed,
                severity=evaluation.severity,
                metadata=evaluation.metadata,
                description=evaluation.description,
            )

    @dg.sensor(
        name=f"{source}__lag",
        minimum_interval_seconds=health.lag_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Measures what waits at {source} and reports each table's source_lag.",
    )
    def _lag_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        return lag_tick(context.instance, context.cursor, measures, rule, datetime.now(UTC))

    return dg.Definitions(asset_checks=[_lag_check], sensors=[_lag_sensor])


def lag_tick(
    instance: dg.DagsterInstance,
    cursor: str | None,
    measures: Mapping[dg.AssetKey, LagMeasure],
    rule: LagRule,
    now: datetime,
) -> dg.SensorResult:
    """One lag sensor tick: an evaluation and an observation per table, no run."""
    since = {k: datetime.fromisoformat(v) for k, v in json.loads(cursor or "{}").items()}
    events: list[dg.AssetCheckEvaluation | dg.AssetObservation] = []
    late: list[str] = []
    for key, measure in measures.items():
        name = key.to_user_string()
        evaluation, waiting_since = evaluate(key, measure, instance, rule, now, since.get(name))
        since.pop(name, None)
        if waiting_since is not None:
            since[name] = waiting_since
        events.append(evaluation)
        events.append(dg.AssetObservation(asset_key=key, metadata=evaluation.metadata))
        if not evaluation.passed:
            late.append(f"{name}: {evaluation.description}")
    return dg.SensorResult(
        asset_events=events,
        cursor=json.dumps({k: v.isoformat() for k, v in sorted(since.items())}),
        skip_reason="; ".join(late) if late else "lag within the batch's allowance",
    )


def _round(value: timedelta | None) -> str:
    return str(timedelta(seconds=round(value.total_seconds()))) if value else "0:00:00"
