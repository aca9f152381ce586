"""A small shop database (customers, orders, order events) for the demo and the tests.

The same SQLAlchemy tables are created in SQLite, PostgreSQL or MariaDB, and the rows are
generated from a seed, so a test can compute exactly which rows fall in any slice.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()
_timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("email", sa.String(128), nullable=False),
    sa.Column("updated_at", _timestamp, nullable=False, index=True),
)
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("amount", sa.Numeric(10, 2), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("updated_at", _timestamp, nullable=False, index=True),
)
order_events = sa.Table(
    "order_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("order_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("recorded_at", _timestamp, nullable=False),
)

STATUSES = ("placed", "paid", "shipped", "delivered", "returned")


@dataclass(frozen=True)
class ShopSeed:
    """How much to generate, and over which days."""

    customers: int = 200
    orders: int = 2000
    events: int = 3000
    first_day: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    days: int = 20
    seed: int = 7


def _moment(rng: random.Random, seed: ShopSeed) -> datetime:
    micros = rng.randrange(seed.days * 86_400 * 1_000_000)
    # Land some rows exactly on midnight: window boundaries are where slicing goes wrong.
    if rng.random() < 0.02:
        micros -= micros % (86_400 * 1_000_000)
    return seed.first_day + timedelta(microseconds=micros)


def create_shop(engine: sa.Engine, seed: ShopSeed = ShopSeed()) -> None:
    """Drop and re-create the shop tables, filled deterministically from `seed`."""
    rng = random.Random(seed.seed)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            customers.insert(),
            [
                {
                    "id": i,
                    "name": f"Customer {i}",
                    "email": f"customer{i}@example.test",
                    "updated_at": _moment(rng, seed),
                }
                for i in range(1, seed.customers + 1)
            ],
        )
        connection.execute(
            orders.insert(),
            [
                {
                    "id": i,
                    "customer_id": rng.randint(1, seed.customers),
                    "amount": round(rng.uniform(1, 500), 2),
                    "status": rng.choice(STATUSES),
                    "updated_at": _moment(rng, seed),
                }
                for i in range(1, seed.orders + 1)
            ],
        )
        append_events(connection, seed.events, first_id=1, rng=rng, seed=seed)


def append_events(
    connection: sa.Connection, count: int, first_id: int, rng: random.Random, seed: ShopSeed
) -> None:
    """Record `count` more order events with ids from `first_id` (the size-batch demo)."""
    connection.execute(
        order_events.insert(),
        [
            {
                "id": first_id + n,
                "order_id": rng.randint(1, seed.orders),
                "kind": rng.choice(STATUSES),
                "recorded_at": _moment(rng, seed),
            }
            for n in range(count)
        ],
    )


def trickle(engine: sa.Engine, every_seconds: float, batch: int, seed: ShopSeed) -> None:
    """Keep recording order events, so the size-batched demo source has something to cut."""
    rng = random.Random()
    while True:
        with engine.begin() as connection:
            last = connection.execute(sa.select(sa.func.max(order_events.c.id))).scalar() or 0
            append_events(connection, batch, first_id=last + 1, rng=rng, seed=seed)
        time.sleep(every_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description="Create the demo shop SQLite database.")
    parser.add_argument("--path", default="data/demo/shop.sqlite")
    parser.add_argument("--force", action="store_true", help="re-create even if it exists")
    parser.add_argument(
        "--trickle", type=float, metavar="SECONDS", help="then append events every SECONDS"
    )
    args = parser.parse_args()
    path = Path(args.path)
    engine = sa.create_engine(f"sqlite:///{path}")
    if path.exists() and not args.force:
        print(f"demo shop already at {path}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_shop(engine)
        print(f"demo shop created at {path}")
    if args.trickle:
        trickle(engine, args.trickle, batch=50, seed=ShopSeed())


if __name__ == "__main__":
    main()
