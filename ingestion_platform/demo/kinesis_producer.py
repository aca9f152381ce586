"""Online-shop customer events put into a Kinesis stream, at a chosen rate and share of junk.

Used by `make demo` (against moto's server) and by the tests and the benchmark:

    python -m ingestion_platform.demo.kinesis_producer --endpoint http://127.0.0.1:4566 \\
        --stream clicks --shards 4 --rate 50 --malformed 0.02
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import EndpointConnectionError

COUNTRIES = ["FR", "DE", "NL", "ES", "IT", "GB", "US", "PL", "SE", "BE"]
DEVICES = ["ios", "android", "web-desktop", "web-mobile"]
EVENTS = ["view", "add_to_cart", "checkout", "purchase"]
SKUS = [f"SKU-{n:04d}" for n in range(1, 201)]
# PutRecords takes at most 500 records per call.
PUT_BATCH = 500


def customer_event(rng: random.Random, number: int) -> dict[str, Any]:
    """One shop event: who, where, on what device, which items for how much, and when."""
    items = [
        {"sku": rng.choice(SKUS), "quantity": rng.randint(1, 3), "price": rng.randint(199, 9999)}
        for _ in range(rng.randint(1, 4))
    ]
    return {
        "event_id": number,
        "customer_id": rng.randint(1, 50_000),
        "country": rng.choice(COUNTRIES),
        "device": rng.choice(DEVICES),
        "event_type": rng.choice(EVENTS),
        "items": items,
        "amount_cents": sum(item["quantity"] * item["price"] for item in items),
        "event_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


def malformed(rng: random.Random, number: int) -> bytes:
    """A record the platform must quarantine: broken JSON, not an object, or not UTF-8."""
    kind = rng.randrange(3)
    if kind == 0:
        return b'{"event_id": %d, "customer_id": ' % number
    if kind == 1:
        return b"[%d]" % number
    return b'{"event_id": %d, "note": "\xff\xfe"}' % number


def records(rng: random.Random, first: int, count: int, malformed_share: float) -> list[dict]:
    """PutRecords entries for events `first` .. `first + count - 1`."""
    entries = []
    for number in range(first, first + count):
        if rng.random() < malformed_share:
            data = malformed(rng, number)
        else:
            data = json.dumps(customer_event(rng, number), separators=(",", ":")).encode()
        entries.append({"Data": data, "PartitionKey": f"customer-{rng.randint(1, 50_000)}"})
    return entries


def put(kinesis: Any, stream: str, entries: list[dict]) -> None:
    """Put entries, re-putting any the stream rejected (PutRecords fails per record)."""
    for start in range(0, len(entries), PUT_BATCH):
        batch = entries[start : start + PUT_BATCH]
        while batch:
            response = kinesis.put_records(StreamName=stream, Records=batch)
            batch = [
                entry
                for entry, result in zip(batch, response["Records"], strict=True)
                if "ErrorCode" in result
            ]
            if batch:
                time.sleep(0.2)


def ensure_stream(kinesis: Any, stream: str, shards: int, wait_seconds: float = 30) -> None:
    """Create the stream if missing, waiting for an emulator that is still starting."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            names = kinesis.list_streams().get("StreamNames", [])
            break
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    if stream not in names:
        kinesis.create_stream(StreamName=stream, ShardCount=shards)
        kinesis.get_waiter("stream_exists").wait(
            StreamName=stream, WaiterConfig={"Delay": 0.5, "MaxAttempts": 60}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=None, help="emulator URL; default: AWS")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--stream", default="clicks")
    parser.add_argument("--shards", type=int, default=4, help="shards if the stream is created")
    parser.add_argument("--rate", type=float, default=50, help="records per second")
    parser.add_argument("--malformed", type=float, default=0.02, help="share of bad records")
    parser.add_argument("--count", type=int, default=0, help="stop after N records (0: never)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    kinesis = boto3.client("kinesis", endpoint_url=args.endpoint, region_name=args.region)
    ensure_stream(kinesis, args.stream, args.shards)
    rng = random.Random(args.seed)
    number, started = 1, time.monotonic()
    while not args.count or number <= args.count:
        # One put per second carries a second's worth of records.
        count = max(1, int(args.rate))
        if args.count:
            count = min(count, args.count - number + 1)
        put(kinesis, args.stream, records(rng, number, count, args.malformed))
        number += count
        time.sleep(max(0.0, started + (number - 1) / args.rate - time.monotonic()))


if __name__ == "__main__":
    main()
