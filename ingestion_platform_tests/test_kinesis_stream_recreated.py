"""A stream deleted and created again under the same name is read from its start, and said so."""

import time
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform_tests.kinesis_emulators import (
    client,
    create_stream,
    declare,
    drain,
    event_ids,
    new_stream,
    put_events,
    tick,
)

pytestmark = pytest.mark.usefixtures("aws_env")


def _delete(kinesis: object, stream: str) -> None:
    kinesis.delete_stream(StreamName=stream)  # type: ignore[attr-defined]
    for _ in range(100):
        if stream not in kinesis.list_streams()["StreamNames"]:  # type: ignore[attr-defined]
            return
        time.sleep(0.1)
    pytest.fail(f"stream {stream} was not deleted")


@pytest.mark.parametrize("emulator", ["moto_endpoint", "kinesis_mock_endpoint"])
def test_a_recreated_stream_is_detected_and_read_from_its_start(
    emulator: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    warehouse_path: Path,
    warehouse: Warehouse,
    instance: dg.DagsterInstance,
) -> None:
    endpoint = request.getfixturevalue(emulator)
    kinesis = client(endpoint)
    stream = new_stream(kinesis, 2)
    defs = declare(tmp_path, endpoint, stream)
    put_events(kinesis, stream, 1, 150)
    drain(defs, instance, warehouse_path, 100)

    # The same name, a new stream: its sequence numbers start over (moto) or are unknown
    # to the old positions (kinesis-mock refuses them).
    _delete(kinesis, stream)
    create_stream(kinesis, stream, 2)
    put_events(kinesis, stream, 1001, 60)
    skipped = tick(defs, instance, warehouse_path)
    assert skipped.run_requests == []
    message = skipped.skip_reason.skip_message if skipped.skip_reason else ""
    assert message.startswith(
        f"stream {stream!r} was deleted and created again (now created at "
    ), message
    assert "reading the new stream from its start" in message
    assert message.endswith("less than 100 records pending: 60 of 100 across 2 shard(s)"), message

    put_events(kinesis, stream, 1061, 40)
    drain(defs, instance, warehouse_path, 200)
    landed = event_ids(warehouse)
    old, new = landed[:100], landed[100:]
    assert len(set(old)) == 100 and set(old) <= set(range(1, 151))
    assert new == list(range(1001, 1101))
    # Said once: the next tick reads on quietly.
    later = tick(defs, instance, warehouse_path)
    assert later.skip_reason is not None
    assert later.skip_reason.skip_message == (
        "less than 100 records pending: 0 of 100 across 2 shard(s)"
    )
