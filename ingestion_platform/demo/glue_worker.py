"""A stand-in for AWS Glue's workers, because moto does not run job scripts.

moto's server accepts Glue jobs and job runs and moves each run from STARTING through
RUNNING to SUCCEEDED, but never executes the job's script, so nothing would be written.
This process does what the demo job's script would: it polls GetJobRuns for runs it has not
handled yet, reads their `--start`, `--end` and `--output_path` arguments, and writes
deterministic orders for each day of [start, end) as Parquet under
`<output_path>dt=YYYY-MM-DD/` (one `part-00000.parquet` and Spark's `_SUCCESS` marker per
day), while the run is still going. The tests use the same writer from a thread.

At start it creates the demo's bucket and job, and makes moto's job runs take a few
seconds per state (moto's state manager), as real ones take minutes:

    python -m ingestion_platform.demo.glue_worker --endpoint http://127.0.0.1:4566
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import EndpointConnectionError

REGION = "us-east-1"
CURRENCIES = ["EUR", "USD", "GBP"]


def aws_client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
    )


def orders(start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The orders of [start, end): one to three per hour, every value derived from the hour."""
    rows = []
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hour += timedelta(hours=1) if hour < start else timedelta(0)
    while hour < end:
        number = int(hour.timestamp()) // 3600
        for index in range(1 + number % 3):
            rows.append(
                {
                    "order_id": number * 10 + index,
                    "customer_id": (number + index) % 50 + 1,
                    "amount": ((number * 7 + index * 13) % 1000) / 10,
                    "currency": CURRENCIES[(number + index) % 3],
                    "ordered_at": hour + timedelta(minutes=10 * index),
                }
            )
        hour += timedelta(hours=1)
    return rows


def write_output(s3: Any, output_path: str, start: datetime, end: datetime) -> list[str]:
    """Write each day of [start, end) under `<output_path>dt=<day>/`; returns the keys."""
    parsed = urlparse(output_path)
    bucket, root = parsed.netloc, parsed.path.lstrip("/")
    written = []
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        window_start, window_end = max(day, start), min(day + timedelta(days=1), end)
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(orders(window_start, window_end)), buffer)
        folder = f"{root}dt={day:%Y-%m-%d}/"
        s3.put_object(Bucket=bucket, Key=f"{folder}part-00000.parquet", Body=buffer.getvalue())
        s3.put_object(Bucket=bucket, Key=f"{folder}_SUCCESS", Body=b"")
        written.append(folder)
        day += timedelta(days=1)
    return written


def handle_new_runs(glue: Any, s3: Any, job: str, seen: set[str]) -> list[str]:
    """Do the script's work for every active run of `job` not handled yet; returns their ids."""
    handled = []
    for page in glue.get_paginator("get_job_runs").paginate(JobName=job):
        for run in page["JobRuns"]:
            if run["Id"] in seen or run["JobRunState"] not in ("STARTING", "RUNNING"):
                continue
            arguments = run.get("Arguments", {})
            start = datetime.fromisoformat(arguments["--start"])
            end = datetime.fromisoformat(arguments["--end"])
            write_output(s3, arguments["--output_path"], start, end)
            seen.add(run["Id"])
            handled.append(run["Id"])
    return handled


def serve(endpoint: str, job: str, stop: threading.Event, every: float = 0.2) -> None:
    """Handle the job's new runs until `stop` is set."""
    glue, s3 = aws_client("glue", endpoint), aws_client("s3", endpoint)
    seen: set[str] = set()
    while not stop.wait(every):
        handle_new_runs(glue, s3, job, seen)


def slow_job_runs(endpoint: str, seconds: float) -> None:
    """Make moto keep each job run in each state for `seconds` (by default it ends at once)."""
    body = {
        "model_name": "glue::job_run",
        "transition": {"progression": "time", "seconds": seconds},
    }
    request = urllib.request.Request(
        f"{endpoint}/moto-api/state-manager/set-transition",
        data=json.dumps(body).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()


def create_job(glue: Any, job: str) -> None:
    glue.create_job(
        Name=job,
        Role="arn:aws:iam::123456789012:role/demo-glue",
        Command={"Name": "glueetl", "ScriptLocation": f"s3://scripts/{job}.py"},
        ExecutionProperty={"MaxConcurrentRuns": 20},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:4566")
    parser.add_argument("--job", default="orders_export")
    parser.add_argument("--bucket", default="demo-glue")
    parser.add_argument("--state-seconds", type=float, default=5.0)
    args = parser.parse_args()
    glue = aws_client("glue", args.endpoint)
    while True:  # started alongside moto's server; wait for it to listen
        try:
            glue.list_jobs()
            break
        except EndpointConnectionError:
            time.sleep(0.5)
    aws_client("s3", args.endpoint).create_bucket(Bucket=args.bucket)
    try:
        create_job(glue, args.job)
    except glue.exceptions.AlreadyExistsException:
        pass  # moto's server outlived an earlier worker
    slow_job_runs(args.endpoint, args.state_seconds)
    try:
        serve(args.endpoint, args.job, threading.Event(), every=1.0)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
