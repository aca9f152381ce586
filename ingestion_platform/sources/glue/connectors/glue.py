"""AWS Glue job runs: start one with arguments, find it again, follow it to its end.

boto3's Glue client, not dagster-aws's `PipesGlueClient`, because of what a partition's run
must do that `PipesGlueClient.run` cannot:
- attach to a job run an earlier Dagster run started (recorded id, or found by its marker
  argument after a crash): `run` always calls StartJobRun, so a retry would start the
  extraction twice;
- stop waiting after a timeout while the job goes on (a later run attaches to it), and
  report progress as the state changes: `run` sleeps a fixed 5 s between polls with no
  overall bound;
- run any Glue script as it is: Pipes expects the script to speak its protocol (context
  injector, CloudWatch message reader), and ours only write files under an S3 prefix.
A poll costs the same either way, one GetJobRun call (13 ms on moto's server on loopback);
what differs is the wait: polls here start at 1 s and grow by half to a cap. Measured on
moto with runs spending 1 s in STARTING and 1 s in RUNNING: `PipesGlueClient`'s loop saw
the run end after 10.0 s, `follow` after 2.5 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

ACTIVE_STATES = frozenset({"STARTING", "RUNNING", "WAITING", "STOPPING"})
SUCCEEDED = "SUCCEEDED"
FIRST_POLL_SECONDS = 1.0
POLL_GROWTH = 1.5


class GlueUnavailable(ConnectionError):
    """Glue could not be asked: no credentials, endpoint unreachable, access denied."""


class GlueJobMissing(LookupError):
    """The declared job does not exist in this account and region."""


class GlueRunMissing(LookupError):
    """Glue no longer knows a job run (it keeps them for 90 days)."""


class GlueRefused(RuntimeError):
    """Glue answered a call with an error (e.g. ConcurrentRunsExceededException)."""


class GlueRunFailed(RuntimeError):
    """A job run ended in FAILED, ERROR, TIMEOUT, STOPPED or EXPIRED."""

    def __init__(self, job_name: str, run: JobRun) -> None:
        super().__init__(
            f"Glue job {job_name!r} run {run.run_id} ended {run.state}: "
            f"{run.error_message or '(Glue gave no error message)'}"
        )
        self.run = run


class GlueRunStillActive(TimeoutError):
    """Following a job run took longer than the timeout; the job run goes on."""


@dataclass(frozen=True)
class JobRun:
    """A job run as GetJobRun describes it."""

    run_id: str
    state: str
    error_message: str | None = None
    execution_seconds: int | None = None  # Glue's ExecutionTime: billed seconds of work
    started_on: datetime | None = None
    completed_on: datetime | None = None
    arguments: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCEEDED

    @classmethod
    def of(cls, described: dict[str, Any]) -> JobRun:
        return cls(
            run_id=described["Id"],
            state=described["JobRunState"],
            error_message=described.get("ErrorMessage"),
            execution_seconds=described.get("ExecutionTime"),
            started_on=described.get("StartedOn"),
            completed_on=described.get("CompletedOn"),
            arguments=dict(described.get("Arguments") or {}),
        )


ProgressFn = Callable[[JobRun, float], None]


def glue_clients(region: str | None, endpoint_url: str | None) -> tuple[Any, Any]:
    """A client for reads (retried) and one for StartJobRun (never retried by botocore: a
    retry after a lost response would start a second job run)."""
    # Imported here: boto3 loads only in processes that reach AWS.
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()

    def client(attempts: int) -> Any:
        config = Config(
            retries={"total_max_attempts": attempts, "mode": "standard"},
            connect_timeout=10,
            read_timeout=30,
        )
        return session.client("glue", region_name=region, endpoint_url=endpoint_url, config=config)

    return client(5), client(1)


class GlueJobs:
    """The runs of one Glue job."""

    def __init__(self, job_name: str, reader: Any, starter: Any) -> None:
        self.job_name = job_name
        self.reader = reader
        self.starter = starter

    @classmethod
    def open(cls, job_name: str, region: str | None, endpoint_url: str | None) -> GlueJobs:
        reader, starter = glue_clients(region, endpoint_url)
        return cls(job_name, reader, starter)

    def start(self, arguments: dict[str, str]) -> str:
        """Start a job run; returns its id."""
        with _asking(self.job_name, "StartJobRun"):
            response = self.starter.start_job_run(JobName=self.job_name, Arguments=arguments)
        return response["JobRunId"]

    def get(self, run_id: str) -> JobRun:
        with _asking(self.job_name, "GetJobRun"):
            response = self.reader.get_job_run(
                JobName=self.job_name, RunId=run_id, PredecessorsIncluded=False
            )
        return JobRun.of(response["JobRun"])

    def find(self, run_id: str) -> JobRun | None:
        """The run, or None once Glue no longer knows it (runs are kept for 90 days)."""
        try:
            return self.get(run_id)
        except GlueRunMissing:
            return None

    def runs(self) -> Iterator[JobRun]:
        """Every run Glue keeps for the job (GetJobRuns, page by page)."""
        with _asking(self.job_name, "GetJobRuns"):
            for page in self.reader.get_paginator("get_job_runs").paginate(JobName=self.job_name):
                yield from (JobRun.of(item) for item in page.get("JobRuns", []))

    def find_active(self, argument: str, value: str) -> JobRun | None:
        """An active run whose `argument` is `value` (a marker this platform sets)."""
        return next(
            (r for r in self.runs() if r.active and r.arguments.get(argument) == value), None
        )

    def follow(
        self,
        run_id: str,
        *,
        poll_cap_seconds: float,
        timeout_seconds: float,
        progress: ProgressFn,
        sleep: Callable[[float], None] = time.sleep,
    ) -> JobRun:
        """Poll until the run ends; GlueRunFailed unless it SUCCEEDED, GlueRunStillActive
        after `timeout_seconds`. `progress(run, elapsed)` is called after every poll."""
        started = time.monotonic()
        interval = min(FIRST_POLL_SECONDS, poll_cap_seconds)
        while True:
            run = self.get(run_id)
            elapsed = time.monotonic() - started
            progress(run, elapsed)
            if run.succeeded:
                return run
            if not run.active:
                raise GlueRunFailed(self.job_name, run)
            remaining = timeout_seconds - elapsed
            if remaining <= 0:
                raise GlueRunStillActive(
                    f"Glue job {self.job_name!r} run {run_id} is still {run.state} after "
                    f"{elapsed:,.0f}s (timeout {timeout_seconds:,.0f}s)"
                )
            sleep(min(interval, remaining))
            interval = min(interval * POLL_GROWTH, poll_cap_seconds)


@contextmanager
def _asking(job_name: str, operation: str) -> Iterator[None]:
    """botocore's errors as ours, each saying which call Glue answered and how."""
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", str(error))
        if code == "EntityNotFoundException" and operation == "GetJobRun":
            raise GlueRunMissing(f"Glue job {job_name!r}: {message}") from None
        if code == "EntityNotFoundException":
            raise GlueJobMissing(f"Glue has no job {job_name!r}: {message}") from None
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            raise GlueUnavailable(f"{operation} was refused ({code}): {message}") from None
        if code == "ConcurrentRunsExceededException":
            message += (
                "; raise the job's MaxConcurrentRuns, or backfill with `backfill: single_run`"
            )
        raise GlueRefused(f"Glue answered {operation} with {code}: {message}") from None
    except NoCredentialsError:
        raise GlueUnavailable(
            "no AWS credentials found (environment, shared files or instance role)"
        ) from None
    except BotoCoreError as error:
        raise GlueUnavailable(f"{operation} failed: {error}") from None
