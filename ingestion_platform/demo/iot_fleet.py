"""A stand-in IoT fleet for the demo: sensors publishing readings over MQTT, into a
JetStream stream and to a RabbitMQ queue, with a bad reading now and then.

Each of `--sensors` devices sends a temperature and humidity reading every `--every`
seconds: over MQTT to `fleet/<device>/reading` (QoS 1, with a `message_id`, as the MQTT
source asks of producers), to the JetStream stream FLEET on `FLEET.<device>`, and to the
durable RabbitMQ queue `fleet-readings` (persistent, with the AMQP `message_id` property,
as the RabbitMQ source asks of producers). About
one reading in fifty is bad (text where a number belongs, or not JSON at all) and lands
in the source's `_quarantine`.

    python -m ingestion_platform.demo.iot_fleet --sensors 5 --every 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from datetime import UTC, datetime

import nats
import pika
from nats.js.errors import NotFoundError
from paho.mqtt import publish
from pika.exceptions import AMQPError

STREAM = "FLEET"
QUEUE = "fleet-readings"


def reading(rng: random.Random, device: int, serial: int) -> bytes:
    """One device's reading; now and then a bad one."""
    if rng.random() < 0.02:
        return b"sensor fault" if rng.random() < 0.5 else b'{"celsius": "n/a"}'
    return json.dumps(
        {
            "message_id": f"dev{device}-{serial}",
            "device": f"dev{device}",
            "celsius": round(rng.gauss(21, 4), 2),
            "humidity": round(rng.uniform(20, 80), 1),
            "measured_at": datetime.now(UTC).isoformat(),
        }
    ).encode()


async def run(sensors: int, every: float, nats_url: str, mqtt_host: str, mqtt_port: int) -> None:
    rabbitmq = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    channel = rabbitmq.channel()
    channel.queue_declare(QUEUE, durable=True)
    client = await nats.connect(nats_url)
    js = client.jetstream()
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(name=STREAM, subjects=[f"{STREAM}.>"])
    rng, serial = random.Random(), 0
    while True:
        serial += 1
        batch = [(device, reading(rng, device, serial)) for device in range(sensors)]
        for device, payload in batch:
            await js.publish(f"{STREAM}.dev{device}", payload)
        publish.multiple(
            [
                {"topic": f"fleet/dev{device}/reading", "payload": payload, "qos": 1}
                for device, payload in batch
            ],
            hostname=mqtt_host,
            port=mqtt_port,
        )
        for device, payload in batch:
            properties = pika.BasicProperties(
                message_id=f"dev{device}-{serial}", delivery_mode=2, content_type="application/json"
            )
            channel.basic_publish("", QUEUE, payload, properties)
        rabbitmq.process_data_events(0)  # heartbeats between readings
        await asyncio.sleep(every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=5)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    args = parser.parse_args()
    while True:  # a broker that is down or restarting: try again, as a device would
        try:
            asyncio.run(run(args.sensors, args.every, args.nats, args.mqtt_host, args.mqtt_port))
        except (OSError, nats.errors.Error, AMQPError) as error:
            print(f"iot_fleet: {error}; again in 5 s", flush=True)
            time.sleep(5)


if __name__ == "__main__":
    main()
