"""Start the demo: its stand-ins (APIs, SFTP partner, shop producer, Kinesis) and Dagster.

`make demo` runs this. Every process it starts is stopped when it is: Ctrl-C, or SIGTERM
from a supervisor or `docker stop`. `dagster dev` gets SIGINT (the signal it shuts down
cleanly on, taking its webserver, daemon and code servers with it); whatever is still
alive after a grace period is killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

# Under `docker stop`'s 10 s: whatever outlives it is killed by us, not by Docker halfway.
# A run killed mid-landing leaves the warehouse as it was (its transaction never commits),
# and run monitoring fails it and retries it at the next start.
GRACE_SECONDS = 7


def _stand_ins(python: str, kinesis_endpoint: str) -> list[list[str]]:
    return [
        [python, "-m", "ingestion_platform.demo.sftp_partner", "--port", "2322", "--every", "60"],
        [python, "-m", "ingestion_platform.demo.music_api", "--host", "127.0.0.1",
         "--port", "8765"],
        [python, "-m", "ingestion_platform.demo.shop", "--path", "data/demo/shop.sqlite",
         "--trickle", "2"],
        [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", "4566"],
        [python, "-m", "ingestion_platform.demo.kinesis_producer", "--endpoint", kinesis_endpoint,
         "--stream", "clicks", "--shards", "4", "--rate", "20", "--malformed", "0.02"],
        [python, "-m", "ingestion_platform.demo.s3_drops", "--endpoint", kinesis_endpoint,
         "--every", "60"],
        [python, "-m", "ingestion_platform.demo.glue_worker", "--endpoint", kinesis_endpoint],
        # The machine's NATS (JetStream) and Mosquitto are the brokers; the fleet publishes.
        [python, "-m", "ingestion_platform.demo.iot_fleet", "--sensors", "5", "--every", "2"],
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--workspace", default="ingestion_platform/demo/workspace.yaml")
    args = parser.parse_args()
    python = sys.executable
    dagster = str(Path(python).with_name("dagster"))
    endpoint = os.environ.get("CLICKS_KINESIS_ENDPOINT", "http://127.0.0.1:4566")
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logs = Path("data/demo/logs")
    logs.mkdir(parents=True, exist_ok=True)
    for command in _stand_ins(python, endpoint):
        # Each in its own session, so a Ctrl-C in the terminal reaches them only through us;
        # their output (moto's access log, a stand-in's traceback at Ctrl-C) goes to a file,
        # leaving the terminal to Dagster.
        module = command[2]
        name = module.split(".")[0] if module.startswith("moto") else module.rsplit(".", 1)[-1]
        log = (logs / f"{name}.log").open("ab")
        children.append(subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True))
        log.close()  # the child holds its own copy
    print(f"stand-ins started; their logs are in {logs}/", flush=True)
    children.append(
        subprocess.Popen(
            [dagster, "dev", "-h", "127.0.0.1", "-p", str(args.port), "-w", args.workspace],
            start_new_session=True,
        )
    )
    try:
        while not stopping and all(child.poll() is None for child in children[-1:]):
            time.sleep(0.5)
    finally:
        _stop_all(children)


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        _signal_group(child, signal.SIGINT)
    deadline = time.monotonic() + GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for child in children:
        # The group: dagster dev's webserver, daemon and code servers, and their runs.
        _signal_group(child, signal.SIGKILL)
        child.wait()


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()
