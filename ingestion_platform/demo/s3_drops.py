"""A stand-in for a partner writing to S3, for the demo: moto's server (started by
`make demo` on 127.0.0.1:4566) hosts the bucket `partner-drops`, and this puts an orders
file under `incoming/YYYY/MM/DD/` every minute or so, now and then a malformed one (the
same generator as the SFTP partner's).

    python -m ingestion_platform.demo.s3_drops --endpoint http://127.0.0.1:4566 --every 60
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime

import boto3
from botocore.exceptions import EndpointConnectionError

from ingestion_platform.demo.sftp_partner import partner_file

BUCKET = "partner-drops"


def _client(endpoint: str):  # noqa: ANN202 (boto3's client types are generated)
    # moto accepts any credentials; these are the demo's, never a real account's.
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
    )


def _wait_for_bucket(client, seconds: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            return
        except client.exceptions.BucketAlreadyOwnedByYou:
            return
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:4566")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between objects")
    args = parser.parse_args()
    client = _client(args.endpoint)
    _wait_for_bucket(client)
    rng = random.Random(11)
    serial = 0
    while True:
        name, body = partner_file(rng, serial)
        if not name.endswith("_latin1.csv"):  # this partner writes UTF-8 only
            day = datetime.now(UTC).strftime("%Y/%m/%d")
            client.put_object(Bucket=BUCKET, Key=f"incoming/{day}/{name}", Body=body)
        serial += 1
        time.sleep(args.every * rng.uniform(0.7, 1.3))


if __name__ == "__main__":
    main()
