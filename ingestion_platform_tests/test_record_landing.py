"""Landing nested records (the API path, dlt's merge): one current row per primary key."""

from __future__ import annotations

from typing import Any

import dlt

from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.api.landing import land_slice


def _land(warehouse: Warehouse, key: str, records: list[dict[str, Any]], **hints: Any) -> Any:
    resource = dlt.resource(records, name="tickets", **hints)
    return land_slice(
        warehouse=warehouse,
        dataset="helpdesk",
        pipeline_name="helpdesk__api",
        resources=[resource],
        batch_keys=[key],
        key_of=lambda _record: key,
    )


def _ticket(ticket_id: int, status: str, tags: list[str]) -> dict[str, Any]:
    return {"id": ticket_id, "status": status, "tags": tags}


def test_a_record_landed_in_a_newer_slice_replaces_its_older_version_and_children(
    warehouse: Warehouse,
) -> None:
    first = [_ticket(1, "open", ["a", "b"]), _ticket(2, "open", ["c"])]
    report = _land(warehouse, "2026-11-01", first, primary_key="id")
    assert report.rows_by_key == {"tickets": {"2026-11-01": 2}}

    _land(warehouse, "2026-11-02", [_ticket(1, "closed", ["z"])], primary_key="id")

    assert warehouse.query("select id, status, _batch_key from helpdesk.tickets order by id") == [
        (1, "closed", "2026-11-02"),
        (2, "open", "2026-11-01"),
    ]
    # The old version's child rows went with it.
    assert warehouse.query(
        "select t.id, c.value from helpdesk.tickets t join helpdesk.tickets__tags c "
        "on c._dlt_parent_id = t._dlt_id order by 1, 2"
    ) == [(1, "z"), (2, "c")]

    # Replaying the old slice, as the source now answers it (ticket 1 has moved on).
    _land(warehouse, "2026-11-01", [_ticket(2, "open", ["c"])], primary_key="id")
    assert warehouse.query("select id, _batch_key from helpdesk.tickets order by id") == [
        (1, "2026-11-02"),
        (2, "2026-11-01"),
    ]
    assert warehouse.count("helpdesk", "tickets__tags") == 2


def test_without_a_primary_key_each_slice_keeps_what_it_read(warehouse: Warehouse) -> None:
    _land(warehouse, "2026-11-01", [_ticket(1, "open", [])])
    _land(warehouse, "2026-11-02", [_ticket(1, "closed", [])])
    assert warehouse.query("select id, status from helpdesk.tickets order by status") == [
        (1, "closed"),
        (1, "open"),
    ]
