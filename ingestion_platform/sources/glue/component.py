"""An AWS Glue ETL job as a source: Dagster owns the schedule, partitions, backfills and landing.

One asset per source (`<source>/<table>`) on time windows. A partition's run starts one job
run with arguments templated from its window (or attaches to the one still running for it:
a partition's job run is never started twice, glue_run.py), follows it with bounded polling,
and fails with Glue's own error message if the job fails. Once it SUCCEEDED, the files the
job wrote under the partition's output prefix are landed like a file source's: staged,
read by DuckDB, bad rows quarantined, the partition's rows replaced in one transaction.

Unlike the other sources, the step is not in the `duckdb_warehouse` pool: it spends most of
its time waiting for Glue, and holding the pool's one slot meanwhile would stop every other
source from landing. The warehouse's file lock still serialises the landing itself.
"""

import time
from typing import Literal
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field

from ingestion_platform.core.batching import CheckedBatch, parse_duration, scheduled_definitions
from ingestion_platform.core.bounded import PositiveFloat
from ingestion_platform.core.declaration import Setting, SourceContext
from ingestion_platform.core.health import HealthSpec, asset_health
from ingestion_platform.core.warehouse import WarehouseResource
from ingestion_platform.core.window_lag import time_batch_lag_defs
from ingestion_platform.sources.glue.connectors.glue import (
    GlueJobMissing,
    GlueJobs,
    GlueRefused,
    GlueRunFailed,
    GlueRunStillActive,
)
from ingestion_platform.sources.glue.output import OutputLanding, land_outputs
from ingestion_platform.sources.glue.run import (
    MARKER_ARGUMENT,
    Finished,
    ProgressLog,
    RunRecords,
    Window,
    active_run,
    consecutive,
    start_run,
    template_problem,
    varies_by_partition,
)


class GlueOutput(dg.Model):
    """Where the job writes each partition's files: a bucket and a templated prefix."""

    bucket: str
    prefix: str
    # S3's own endpoint and region when they differ from Glue's (VPC endpoints).
    endpoint_url: Setting | None = None
    region: Setting | None = None


class GlueJobSource(dg.Component, dg.Model, dg.Resolvable):
    """An AWS Glue job run per time window, its output files landed in DuckDB."""

    job_name: str
    region: Setting | None = None
    endpoint_url: Setting | None = None
    arguments: dict[str, str] = Field(default_factory=dict)
    output: GlueOutput
    format: Literal["auto", "parquet", "jsonl", "csv"] = "auto"
    table: str | None = None
    batch: CheckedBatch
    backfill: Literal["per_partition", "single_run"] = "per_partition"
    poll_seconds: PositiveFloat = 30.0
    timeout: str = "6h"
    on_bad_file: Literal["quarantine", "fail"] = "quarantine"
    automation: Literal["running", "stopped"] = "stopped"
    health: HealthSpec = HealthSpec()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        source = SourceContext.from_load_context(context)
        self._check(source)
        table = self.table or source.name
        name = f"{source.name}__{table}"
        asset = self._asset(source, table, name, self.batch.partitions_def(name))
        return dg.Definitions.merge(
            scheduled_definitions(source.name, [asset], self.automation == "running"),
            time_batch_lag_defs(source.name, [asset], self.batch, self.health),
        )

    def _check(self, source: SourceContext) -> None:
        if not self.batch.is_time:
            raise source.error(
                "batch",
                f"a Glue job runs per time window, and a size batch ({self.batch.size_unit}) "
                "has no window to pass it",
                "use a time batch, e.g. `batch: {every: day, start: 2026-01-01}`",
            )
        for name, template in self.arguments.items():
            if not name.startswith("--") or name == MARKER_ARGUMENT:
                raise source.error(
                    f"arguments.{name}",
                    f"{name!r} is not a job argument name of ours to set",
                    f"name it like `--start_date` (not {MARKER_ARGUMENT}, which the platform sets)",
                )
            problem = template_problem(template)
            if problem:
                raise source.error(
                    f"arguments.{name}", problem, "write e.g. '{start:%Y-%m-%d}' or '{end}'"
                )
        problem = template_problem(self.output.prefix)
        if problem is None and not varies_by_partition(self.output.prefix):
            problem = f"{self.output.prefix!r} is the same for every partition"
        if problem:
            raise source.error(
                "output.prefix", problem, "write e.g. 'glue/orders/dt={start:%Y-%m-%d}/'"
            )
        try:
            parse_duration(self.timeout)
        except ValueError as error:
            raise source.error("timeout", str(error), "e.g. timeout: 6h") from None

    def describe(self, table: str) -> str:
        """What the asset holds and where it comes from, without secrets."""
        region = self.region
        where = "the default region" if region is None else f"region {_shown(region)}"
        if self.endpoint_url is not None:
            endpoint = self.endpoint_url
            host = urlparse(endpoint).netloc if isinstance(endpoint, str) else _shown(endpoint)
            where += f", endpoint {host}"
        per = self.batch.every or f"window of the cron {self.batch.cron!r}"
        runs = "one job run per partition"
        if self.backfill == "single_run":
            runs = "one job run per partition, or for a whole backfill's range"
        return (
            f"Files the AWS Glue job {self.job_name} ({where}) writes to "
            f"s3://{self.output.bucket}/{self.output.prefix}, landed into table {table}, one "
            f"partition per {per} ({runs}); bad rows go to the source's _quarantine table."
        )

    def _asset(
        self, source: SourceContext, table: str, name: str, partitions: dg.PartitionsDefinition
    ) -> dg.AssetsDefinition:
        key = dg.AssetKey([source.name, table])

        @dg.asset(
            key=key,
            group_name=source.name,
            kinds={"glue", "s3", "duckdb"},
            description=self.describe(table),
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run()
            if self.backfill == "single_run"
            else None,
            metadata={"source_file": source.defs_file},
            **asset_health(  # type: ignore[arg-type]
                key, self.batch, self.health, 0, quarantines=True
            ),
        )
        def _land_glue_output(
            context: dg.AssetExecutionContext, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            # Runs the Glue job for the partition(s), then lands the files it wrote. (Not a
            # docstring: the description is set above, and Dagster would parse one per asset.)
            with source.naming_failures(ConnectionError, GlueRefused):
                return self._materialize(context, warehouse, source, table, name)

        return _land_glue_output

    def _materialize(
        self,
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: SourceContext,
        table: str,
        name: str,
    ) -> dg.MaterializeResult:
        partitions_def = context.assets_def.partitions_def
        assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
        windows = [
            Window(key, *partitions_def.time_window_for_partition_key(key))
            for key in context.partition_keys
        ]
        region = self._setting(source, self.region, "region")
        endpoint = self._setting(source, self.endpoint_url, "endpoint_url")
        jobs = GlueJobs.open(self.job_name, region, endpoint)
        records = RunRecords(context.instance, name)
        try:
            followed = self._start_or_attach(context, jobs, records, name, windows)
            finished = [
                self._follow(context, jobs, run_id, group, source) for run_id, group in followed
            ]
        except GlueJobMissing as missing:
            raise source.error(
                "job_name", str(missing), "create the job in Glue, or fix job_name"
            ) from None
        target = OutputLanding(
            source=source.name,
            table=table,
            bucket=self.output.bucket,
            prefix=self.output.prefix,
            region=self._setting(source, self.output.region, "output.region") or region,
            endpoint_url=self._setting(source, self.output.endpoint_url, "output.endpoint_url")
            or endpoint,
            format=self.format,
            on_bad_file=self.on_bad_file,
            warn_share=self.health.quarantine_warn_share,
        )
        return land_outputs(context, warehouse.get(), target, finished)

    @staticmethod
    def _setting(source: SourceContext, value: Setting | None, field: str) -> str | None:
        return source.resolve(value, field) if value is not None else None

    def _start_or_attach(
        self,
        context: dg.AssetExecutionContext,
        jobs: GlueJobs,
        records: RunRecords,
        name: str,
        windows: list[Window],
    ) -> list[tuple[str, list[Window]]]:
        """The job runs that produce `windows`: still-active ones attached, the rest started."""
        followed: dict[str, list[Window]] = {}
        to_start = []
        for window in windows:
            run = active_run(jobs, records, window.key, context.log)
            if run is None:
                to_start.append(window)
                continue
            context.log.info(
                f"partition {window.key}: attaching to Glue job run {run.run_id} ({run.state}), "
                "started earlier for it; not starting another"
            )
            followed.setdefault(run.run_id, []).append(window)
        groups = consecutive(to_start) if self.backfill == "single_run" else [[w] for w in to_start]
        for group in groups:
            run_id = start_run(jobs, records, name, group, self.arguments)
            context.log.info(
                f"started Glue job {self.job_name!r} run {run_id} for "
                f"{group[0].start.isoformat()} .. {group[-1].end.isoformat()} "
                f"({len(group)} partition(s))"
            )
            followed[run_id] = group
        return list(followed.items())

    def _follow(
        self,
        context: dg.AssetExecutionContext,
        jobs: GlueJobs,
        run_id: str,
        windows: list[Window],
        source: SourceContext,
    ) -> Finished:
        began = time.monotonic()
        try:
            run = jobs.follow(
                run_id,
                poll_cap_seconds=self.poll_seconds,
                timeout_seconds=parse_duration(self.timeout),
                progress=ProgressLog(context.log, self.job_name),
            )
        except (GlueRunFailed, GlueRunStillActive) as ended:
            state = ended.run.state if isinstance(ended, GlueRunFailed) else "still active"
            goes_on = (
                ""
                if isinstance(ended, GlueRunFailed)
                else "; it goes on, and the next run of the partition attaches to it (or raise "
                "`timeout`)"
            )
            raise dg.Failure(
                description=f"source {source.name!r} ({source.defs_file}): {ended}. "
                f"Nothing was landed{goes_on}",
                metadata={"glue_job_run_id": run_id, "glue_state": state},
            ) from None
        except dg.DagsterExecutionInterruptedError:
            context.log.warning(
                f"Glue job run {run_id} keeps running; the next run of its partition attaches to it"
            )
            raise
        return Finished(run, windows, time.monotonic() - began)


def _shown(value: Setting) -> str:
    """A setting as a description may show it: the value, or the variable it is read from."""
    return value if isinstance(value, str) else f"${value.env}"
