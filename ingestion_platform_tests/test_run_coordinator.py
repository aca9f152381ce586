"""A person's runs go ahead of schedule and sensor runs in the queue and for pool slots."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import SubmitRunContext
from dagster._core.storage.tags import PRIORITY_TAG, SCHEDULE_NAME_TAG, SENSOR_NAME_TAG
from dagster._core.test_utils import create_run_for_test


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    overrides = {
        "run_coordinator": {
            "module": "ingestion_platform.run_coordinator",
            "class": "PriorityRunCoordinator",
            "config": {"max_user_code_failure_retries": 3},
        }
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


def _queued_priority(instance: dg.DagsterInstance, tags: dict[str, str]) -> str | None:
    origin = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("demo"), "__repository__")
    run = create_run_for_test(instance, tags=tags, remote_job_origin=origin.get_job_origin("j"))
    # What the webserver and the daemon call for every run they submit.
    instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]
    queued = instance.get_run_by_id(run.run_id)
    assert queued is not None and queued.status == dg.DagsterRunStatus.QUEUED
    return queued.tags.get(PRIORITY_TAG)


def test_sensor_and_schedule_runs_queue_behind_a_persons(instance: dg.DagsterInstance) -> None:
    assert _queued_priority(instance, {SENSOR_NAME_TAG: "shop_events__size_sensor"}) == "-1"
    assert _queued_priority(instance, {SCHEDULE_NAME_TAG: "shop__schedule"}) == "-1"
    # A click in the UI (materialise or backfill) carries neither tag: Dagster's default, 0.
    assert _queued_priority(instance, {"dagster/backfill": "abc"}) is None


def test_a_priority_set_on_a_run_is_kept(instance: dg.DagsterInstance) -> None:
    tags = {SENSOR_NAME_TAG: "clicks__size_sensor", PRIORITY_TAG: "5"}
    assert _queued_priority(instance, tags) == "5"
