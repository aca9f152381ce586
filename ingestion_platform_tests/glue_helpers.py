"""What the Glue tests share: moto's server with a job and a bucket, a worker thread standing in
for Glue's (moto does not run job scripts), and a proxy that makes chosen job runs fail.

moto moves a job run from STARTING to RUNNING to SUCCEEDED and cannot make one fail, so
`GlueProxy` sits between the platform and moto's Glue endpoint and rewrites the GetJobRun
answers of the runs it is told to fail to `JobRunState: FAILED` with an `ErrorMessage`, as
Glue reports a failed script.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.demo.glue_worker import aws_client, create_job, orders, slow_job_runs
from ingestion_platform.sources.glue.component import GlueJobSource
from ingestion_platform_tests.servers import AwsJsonProxy
from ingestion_platform_tests.sources import build_source

JOB = "orders_export"
BUCKET = "glue-output"
SOURCE = "orders_glue"
TABLE = "orders"


class GlueProxy(AwsJsonProxy):
    """Forwards Glue's JSON calls to moto; GetJobRun of a run whose `--start` is in `fail`
    answers FAILED with that error message."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.fail: dict[str, str] = {}
        self.calls: list[str] = []

    def rewrite(self, operation: str, request: dict[str, Any], data: bytes) -> bytes:
        self.calls.append(operation)
        if operation != "GetJobRun" or not self.fail:
            return data
        answer = json.loads(data)
        run = answer.get("JobRun", {})
        message = self.fail.get(run.get("Arguments", {}).get("--start", ""))
        if message is None:
            return data
        run.update(JobRunState="FAILED", ErrorMessage=message)
        return json.dumps(answer).encode()


@dataclass
class GlueWorld:
    """moto's endpoint, the proxy in front of its Glue, and a unique output root per test."""

    moto: str
    glue_endpoint: str
    proxy: GlueProxy
    glue: Any

    def prepare(self, state_seconds: float = 0.5) -> None:
        aws_client("s3", self.moto).create_bucket(Bucket=BUCKET)
        create_job(self.glue, JOB)
        slow_job_runs(self.moto, state_seconds)

    def new_root(self) -> str:
        return f"t-{uuid.uuid4().hex[:8]}/orders/"

    def declare(self, folder: Path, root: str, **attributes: Any) -> dg.Definitions:
        """An orders_glue source whose job writes under `root` (the worker reads the path)."""
        base = {
            "job_name": JOB,
            "region": "us-east-1",
            "endpoint_url": self.glue_endpoint,
            "arguments": {
                "--start": "{start}",
                "--end": "{end}",
                "--day": "{start:%Y-%m-%d}",
                "--output_path": f"s3://{BUCKET}/{root}",
            },
            "output": {
                "bucket": BUCKET,
                "prefix": root + "dt={start:%Y-%m-%d}/",
                "endpoint_url": self.moto,
            },
            "format": "parquet",
            "table": TABLE,
            "batch": {"every": "day", "start": "2026-11-01"},
            "poll_seconds": 0.3,
            "timeout": "60s",
        }
        return build_source(GlueJobSource, folder / SOURCE, {**base, **attributes})

    def runs(self, root: str) -> list[dict[str, Any]]:
        """The job runs writing under `root`, oldest first."""
        pages = self.glue.get_paginator("get_job_runs").paginate(JobName=JOB)
        runs = [r for page in pages for r in page["JobRuns"]]
        mine = [r for r in runs if r.get("Arguments", {}).get("--output_path", "").endswith(root)]
        return sorted(mine, key=lambda r: r["StartedOn"])


def expected_rows(start: str, end: str) -> list[tuple]:
    """What the worker writes for [start, end), as the warehouse should hold it."""
    rows = orders(datetime.fromisoformat(start), datetime.fromisoformat(end))
    return [
        (r["order_id"], r["customer_id"], r["amount"], r["currency"], r["ordered_at"]) for r in rows
    ]


def landed_rows(warehouse: Warehouse, key: str) -> list[tuple]:
    return warehouse.query(
        "select order_id, customer_id, amount, currency, ordered_at from orders_glue.orders "
        "where _batch_key = ? order by order_id",
        (key,),
    )
