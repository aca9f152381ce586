"""The sensor that cuts a stream into size partitions and asks for their runs.

Each tick reads the shards from their last cut positions (kept in `<source>._partitions`,
not in the cursor), cuts every full batch, writes the cuts to the manifest in one
transaction, and only then adds the partitions and requests their runs. A cut becomes final
only with its run: if the tick is never committed (`dagster sensor preview`, a daemon that
dies first), the next tick finds manifest keys with no run yet and offers them again (the
run key is the partition key, so nothing runs twice). The cursor only remembers how long
the last tick took; `max_wait` counts from the oldest pending record's arrival. A tick
stops reading once its time budget is spent and says how much remains.
"""

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from ingestion_platform.core.backlog import held_note, stream_tags, waiting_runs
from ingestion_platform.core.batching import BatchSpec
from ingestion_platform.core.declaration import SourceContext
from ingestion_platform.core.warehouse import WarehouseResource
from ingestion_platform.sources.kinesis import manifest
from ingestion_platform.sources.kinesis.connectors.kinesis import KinesisReader
from ingestion_platform.sources.kinesis.cuts import CutPlan, merge_cuts, plan_cuts
from ingestion_platform.sources.kinesis.identity import current_epoch

# Called once per tick: the stream's reader and where a shard with no cut yet starts.
OpenStream = Callable[[], tuple[KinesisReader, "StartAt"]]


class StartAt:
    """Where a shard with no cut yet is first read: its trim horizon, a time, or LATEST."""

    def __init__(self, setting: str) -> None:
        self.setting = setting

    @property
    def latest(self) -> bool:
        return self.setting.upper() == "LATEST"

    def timestamp(self) -> datetime | None:
        if self.setting.upper() in ("TRIM_HORIZON", "LATEST"):
            return None
        parsed = datetime.fromisoformat(self.setting.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def partition_key(number: int, cut_at: datetime) -> str:
    """A short, ordered, unique id; the slice itself is in the manifest."""
    return f"{number:06d}-{cut_at:%Y%m%dT%H%M%S}"


def build_stream_sensor(
    *,
    name: str,
    dataset: str,
    spec: BatchSpec,
    asset_key: dg.AssetKey,
    partitions_def: dg.DynamicPartitionsDefinition,
    open_stream: OpenStream,
    minimum_interval_seconds: int,
    running: bool,
    source: SourceContext,
    tick_budget_seconds: float,
) -> dg.SensorDefinition:
    """A sensor cutting `spec.size_threshold` records (or bytes) across all shards."""
    unit = "bytes" if spec.size_unit == "bytes" else "records"

    @dg.sensor(
        name=name,
        asset_selection=[asset_key],
        minimum_interval_seconds=minimum_interval_seconds,
        description=f"Cuts a partition of {dataset} per {spec.size_threshold:,} {unit} "
        "pending across all shards.",
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
    )
    def _stream_sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> dg.SensorResult:
        with source.naming_failures(ConnectionError):
            return _evaluate(context, warehouse)

    def _evaluate(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> dg.SensorResult:
        state = json.loads(context.cursor or "{}")
        started = time.monotonic()
        reader, start_at = open_stream()
        shards = reader.shards()
        created = reader.created_at()
        try:
            target = warehouse.get()
            target.check_dataset(dataset)  # before the manifest, which lives in its schema
            with manifest.sensor_connection(target) as connection:
                manifest.ensure(connection, dataset)
                epoch = current_epoch(
                    connection, dataset, reader.address.name, created, shards, start_at.latest
                )
                positions = manifest.positions(connection, dataset, epoch.start)
                unlanded = manifest.unlanded_keys(connection, dataset, epoch.start)
                cut_so_far = manifest.key_count(connection, dataset)
                since = start_at.timestamp()
                if start_at.latest:
                    since = manifest.origin(connection, dataset)
                    if since is None:
                        since = datetime.now(UTC)
                        manifest.record_origin(connection, dataset, since)
        except manifest.WarehouseBusy as busy:
            return dg.SensorResult(skip_reason=dg.SkipReason(str(busy)), cursor=context.cursor)
        notes = [epoch.recreated_note] if epoch.recreated_note else []
        max_wait = spec.max_wait_seconds

        def cut_partial(oldest_ms: int | None) -> bool:
            # Measured from the oldest pending record's arrival, so a restarted daemon
            # neither resets nor shortens the wait.
            return (
                max_wait is not None
                and oldest_ms is not None
                and time.time() * 1000 - oldest_ms >= max_wait * 1000
            )

        # While a run of this stream waits to start, nothing new is cut (core/backlog.py).
        held = waiting_runs(context.instance, partitions_def.name)
        plan = (
            CutPlan([], [], 0, 0, None)
            if held
            else plan_cuts(
                reader=reader,
                shards=shards,
                positions=positions,
                since=since,
                unit=unit,
                threshold=spec.size_threshold,
                cut_partial=cut_partial,
                deadline=started + tick_budget_seconds,
            )
        )
        if len(plan.cuts) > 1:  # behind: one run lands every full batch as one
            plan.cuts = [merge_cuts(plan.cuts)]
        if plan.out_of_time:
            notes.append(_budget_note(plan, unit))
        for note in notes:
            context.log.warning(note)
        cut_at = datetime.now(UTC)
        new_keys = [
            partition_key(cut_so_far + index + 1, cut_at) for index in range(len(plan.cuts))
        ]
        if plan.cuts or plan.retired:
            try:
                with manifest.sensor_connection(warehouse.get()) as connection:
                    connection.execute("begin")
                    if manifest.positions(connection, dataset, epoch.start) != positions:
                        # Another evaluation cut meanwhile: ranges must never overlap.
                        connection.execute("rollback")
                        return dg.SensorResult(
                            skip_reason=dg.SkipReason(
                                "another evaluation of this sensor cut partitions meanwhile; "
                                "the next tick continues after them"
                            ),
                            cursor=context.cursor,
                        )
                    manifest.record_cuts(
                        connection, dataset, list(zip(new_keys, plan.cuts, strict=True)), cut_at
                    )
                    manifest.retire(connection, dataset, plan.retired)
                    connection.execute("commit")
            except manifest.WarehouseBusy as busy:
                return dg.SensorResult(skip_reason=dg.SkipReason(str(busy)), cursor=context.cursor)
        state["last_tick_seconds"] = round(time.monotonic() - started, 3)
        # Cut by an earlier evaluation whose tick was never committed (a preview, a daemon
        # that died): offered again until a run exists for it.
        unrequested = [key for key in unlanded if not _has_run(context.instance, key)]
        keys = unrequested + new_keys
        cursor = json.dumps(state, sort_keys=True)
        if not keys and held:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(held_note(partitions_def.name, held)), cursor=cursor
            )
        if not keys:
            message = (
                f"less than {spec.size_threshold:,} {unit} pending: "
                f"{plan.pending_bytes if unit == 'bytes' else plan.pending_records:,} of "
                f"{spec.size_threshold:,} across {len(shards)} shard(s)"
            )
            if max_wait and plan.oldest_pending_ms is not None:
                due = datetime.fromtimestamp(plan.oldest_pending_ms / 1000 + max_wait, UTC)
                message += f"; max_wait cuts at {due:%H:%M:%S} UTC"
            message = "; ".join([*notes, message])
            return dg.SensorResult(skip_reason=dg.SkipReason(message), cursor=cursor)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=_run_key(key),
                    partition_key=key,
                    asset_selection=[asset_key],
                    tags=stream_tags(partitions_def.name),
                )
                for key in keys
            ],
            dynamic_partitions_requests=[partitions_def.build_add_request(keys)],
            cursor=cursor,
        )

    def _run_key(key: str) -> str:
        return f"{partitions_def.name}:{key}"

    def _has_run(instance: dg.DagsterInstance, key: str) -> bool:
        if not instance.has_dynamic_partition(partitions_def.name, key):
            return False
        runs = dg.RunsFilter(tags={RUN_KEY_TAG: _run_key(key)})
        return bool(instance.get_run_ids(filters=runs, limit=1))

    def _budget_note(plan: CutPlan, unit: str) -> str:
        held = plan.pending_bytes if unit == "bytes" else plan.pending_records
        return (
            f"tick budget of {tick_budget_seconds:g}s spent after cutting {len(plan.cuts)} "
            f"partition(s): {held:,} {unit} read and not cut yet, and "
            f"{plan.unfinished_shards} shard(s) not read to their tip; the next tick goes on "
            "from there"
        )

    return _stream_sensor
