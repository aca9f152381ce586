"""Landing what a Glue job wrote: each partition's output prefix replaces that partition's slice.

The files are listed under the partition's own prefix (so a job run covering a range lands
each window as its own slice), staged and read exactly as a file source's are
(file_run.py, file_formats.py, sources/files/landing.py), bad rows quarantined. Spark's bookkeeping
objects (`_SUCCESS`, `_temporary/`, `.crc` files) are not data and are skipped. An empty
prefix lands an empty slice: the job found nothing for the window, so the rows an earlier
run landed for it go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg

from ingestion_platform.core.health import landing_checks
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files.connectors.formats import FormatOptions
from ingestion_platform.sources.files.connectors.s3 import S3Files, s3_client
from ingestion_platform.sources.files.connectors.sniff import plan_reads
from ingestion_platform.sources.files.landing import FileLandingReport, land_files
from ingestion_platform.sources.files.manifest import ManifestEntry
from ingestion_platform.sources.files.run import Transfer, stage_files, staging_folder
from ingestion_platform.sources.glue.connectors.glue import JobRun
from ingestion_platform.sources.glue.run import Finished, Window, render


@dataclass(frozen=True)
class OutputLanding:
    """Where a job's output lives and how it is landed."""

    source: str
    table: str
    bucket: str
    prefix: str  # a template, rendered per partition
    region: str | None
    endpoint_url: str | None
    format: Literal["auto", "parquet", "jsonl", "csv"]
    on_bad_file: Literal["quarantine", "fail"]
    warn_share: float


@dataclass
class Landed:
    """One partition's landing: the job run it came from, what was read and written."""

    window: Window
    run: JobRun
    waited_seconds: float
    location: str
    files: list[ManifestEntry]
    transfer: Transfer
    report: FileLandingReport


def is_data(path: str) -> bool:
    """Spark/Hadoop name their bookkeeping `_…` or `.…`; EMR leaves `…_$folder$` markers."""
    parts = path.split("/")
    return not any(p.startswith(("_", ".")) for p in parts) and not path.endswith("$folder$")


def land_outputs(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    target: OutputLanding,
    finished: list[Finished],
) -> dg.MaterializeResult:
    """Land every finished job run's partitions, each its own slice, and report them."""
    client = s3_client(target.region, target.endpoint_url)
    staging_root = warehouse.path.parent / ".staging" / target.source
    landed = []
    with staging_folder(staging_root, context.run_id, context.log) as staging:
        for done in finished:
            for window in done.windows:
                folder = staging / f"{len(landed):05d}"
                landed.append(
                    _land_window(context, warehouse, target, client, done, window, folder)
                )
    return _result(context, warehouse, target, landed)


def _land_window(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    target: OutputLanding,
    client: Any,
    done: Finished,
    window: Window,
    staging: Any,
) -> Landed:
    location = render(target.prefix, window.start, window.end, window.key)
    where = f"s3://{target.bucket}/{location}"
    files = S3Files(client, target.bucket, location)
    try:
        listing = files.list(recursive=True)
        for name, reason in listing.refused.items():
            context.log.warning(f"{where}: refused {name!r}: {reason}")
        manifest = [ManifestEntry.of(e) for e in listing.files if is_data(e.path)]
        transfer = stage_files(files, manifest, staging, context.log) if manifest else Transfer()
    finally:
        files.close()
    staged = zip(transfer.local_paths, [e.path for e in manifest], strict=True)
    reads, unreadable = plan_reads(list(staged), FormatOptions(target.format))
    report = land_files(
        warehouse=warehouse,
        source=target.source,
        table=target.table,
        batch_key=window.key,
        reads=reads,
        unreadable=unreadable,
        on_bad_file=target.on_bad_file,
    )
    if manifest:
        context.log.info(
            f"partition {window.key}: {len(manifest)} file(s) from {where}, "
            f"{report.rows_landed} rows landed, {report.rows_quarantined} quarantined"
        )
    else:
        context.log.warning(
            f"partition {window.key}: the job wrote no files under {where}; landed an empty "
            "slice (rows landed for it earlier, if any, are gone)"
        )
    return Landed(window, done.run, done.waited_seconds, where, manifest, transfer, report)


def _metadata(landed: Landed) -> dict[str, dg.RawMetadataValue]:
    run, report = landed.run, landed.report
    wall = (
        (run.completed_on - run.started_on).total_seconds()
        if run.completed_on and run.started_on
        else 0.0
    )
    return {
        "glue_job_run_id": run.run_id,
        "glue_state": run.state,
        "glue_execution_seconds": run.execution_seconds or 0,
        "glue_wall_seconds": dg.MetadataValue.float(round(wall, 3)),
        "waited_seconds": dg.MetadataValue.float(round(landed.waited_seconds, 3)),
        "output": landed.location,
        "dagster/row_count": report.rows_landed,
        "rows_read": report.rows_read,
        "rows_landed": report.rows_landed,
        "rows_quarantined": report.rows_quarantined,
        "files": len(landed.files),
        "bytes_transferred": landed.transfer.bytes,
        "output_files": dg.MetadataValue.json(
            [{"path": f.path, "size": f.size, "etag": f.etag} for f in landed.files]
        ),
        "bad_files": dg.MetadataValue.json(report.bad_files),
        "slice_start": dg.MetadataValue.timestamp(landed.window.start),
        "slice_end": dg.MetadataValue.timestamp(landed.window.end),
    }


def _result(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    target: OutputLanding,
    landed: list[Landed],
) -> dg.MaterializeResult:
    """Each partition's own figures on it; the run's totals and checks on the result."""
    if len(landed) > 1:
        for item in landed:
            context.add_asset_metadata(_metadata(item), partition_key=item.window.key)
    reports = [item.report for item in landed]
    metadata = _metadata(landed[0]) if len(landed) == 1 else _totals(landed)
    columns = next((r.columns for r in reversed(reports) if r.columns), {})
    metadata["dagster/column_schema"] = dg.TableSchema(
        columns=[dg.TableColumn(name, kind) for name, kind in columns.items()]
    )
    drifted = sorted({c for r in reports if not r.table_created for c in r.new_columns})
    metadata["new_columns"] = dg.MetadataValue.json(drifted)
    keys = [item.window.key for item in landed]
    checks = landing_checks(
        context.asset_key,
        read=sum(r.rows_read for r in reports),
        quarantined=sum(r.rows_quarantined for r in reports),
        landed=warehouse.count_batches(target.source, target.table, keys),
        new_columns=drifted,
        warn_share=target.warn_share,
    )
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _totals(landed: list[Landed]) -> dict[str, dg.RawMetadataValue]:
    reports = [item.report for item in landed]
    return {
        "glue_job_run_ids": dg.MetadataValue.json(sorted({i.run.run_id for i in landed})),
        "partitions": len(landed),
        "dagster/row_count": sum(r.rows_landed for r in reports),
        "rows_read": sum(r.rows_read for r in reports),
        "rows_landed": sum(r.rows_landed for r in reports),
        "rows_quarantined": sum(r.rows_quarantined for r in reports),
        "files": sum(len(i.files) for i in landed),
        "bytes_transferred": sum(i.transfer.bytes for i in landed),
        "slice_start": dg.MetadataValue.timestamp(landed[0].window.start),
        "slice_end": dg.MetadataValue.timestamp(landed[-1].window.end),
        "output_prefixes": dg.MetadataValue.json([i.location for i in landed]),
    }
