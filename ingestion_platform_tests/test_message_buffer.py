"""The durable message buffer: sequence numbers, redeliveries, and a lookup that stays bounded."""

from __future__ import annotations

import pytest

from ingestion_platform.core import message_buffer
from ingestion_platform.core.warehouse import Warehouse


def _messages(*ids: int) -> list[message_buffer.BufferedMessage]:
    return [
        message_buffer.BufferedMessage(f"m{i}", "fleet/t1/temp", b'{"id": %d}' % i, 1_000 + i)
        for i in ids
    ]


def _buffered(warehouse: Warehouse) -> list[tuple]:
    return warehouse.query("select seq, message_id from iot._buffer order by seq")


def test_redeliveries_are_recognised_among_the_newest_messages_only(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(message_buffer, "REDELIVERY_HORIZON", 5)
    assert message_buffer.append(warehouse, "iot", _messages(*range(1, 11))) == 10
    # m8 and m9 were committed among the newest 5: redeliveries, not added. m11, new, comes
    # twice in the window and counts once. m2 is 8 messages back, past the horizon: no broker
    # can still hold it unacknowledged, so it is a new message that reuses an id.
    assert message_buffer.append(warehouse, "iot", _messages(8, 11, 11, 9, 2)) == 2
    assert _buffered(warehouse)[-3:] == [(10, "m10"), (11, "m11"), (12, "m2")]
    assert message_buffer.append(warehouse, "iot", _messages(11, 12)) == 1
    assert _buffered(warehouse)[-1] == (13, "m12")
