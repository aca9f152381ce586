"""The rate budget of rate_budget.py, shared by every process that spends one API key here.

Runs, the size sensor and backfills run in separate processes, and several sources may read
one API with one key; budgets kept in each process's memory would add up at the server. So
the budget's whole state, the requests in flight and the recent completion stamps, lives in
one small file per API host and credential (or `rate_limit_key`), read and rewritten under
an exclusive `flock` for each request start and end. The algorithm
is the same exact one (rate_budget.wait_seconds), so the guarantee is the same: the server
never sees more than the budget, whichever process sent what.

- Stamps come from `time.monotonic()`, the machine's boot clock (CLOCK_MONOTONIC on Linux,
  mach_absolute_time on macOS): one clock for every process, immune to wall-clock steps.
- Each in-flight slot records its process id. A process that died mid-request (killed
  worker, OOM) cannot give its slot back, so a slot whose process is gone, or that is older
  than `stale_after_seconds` (a reused pid), becomes a completion stamped when found.
- A waiting process re-reads the file at most every POLL_SECONDS: another process's
  completion cannot wake it the way a condition variable wakes a thread.
- `flock` is per machine: processes on different machines do not share a budget (nor
  should a network file system be trusted with the lock).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import os
import struct
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ingestion_platform.sources.api.connectors.rate_budget import Rate, wait_seconds

POLL_SECONDS = 0.01
BUDGET_DIR_VARIABLE = "INGESTION_RATE_BUDGET_DIR"


def budget_file(base_url: str, credential: Sequence[str] = (), key: str | None = None) -> Path:
    """The state file of one API budget, for every process and source of this machine.

    Real APIs limit per key: every source that reads the same host with the same credential
    shares one budget, and so does every source naming the same `rate_limit_key`. The name is
    a hash, so no secret is ever written into a file name.
    """
    folder = os.environ.get(BUDGET_DIR_VARIABLE) or os.path.join(
        tempfile.gettempdir(), "ingestion_platform-rate-budgets"
    )
    if key is not None:
        identity = ["rate_limit_key", key]
    else:
        identity = ["host", urlsplit(base_url).netloc.lower(), *credential]
    digest = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:32]
    return Path(folder) / f"{digest}.budget"


class SharedRateBudget:
    """Blocks each request until every rate has room for it, across processes and threads."""

    _tokens = itertools.count()

    def __init__(self, rates: list[Rate], path: Path, stale_after_seconds: float = 600) -> None:
        self._rates = rates
        self._path = path
        self._keep = max(rate.limit for rate in rates)
        self._stale_after = stale_after_seconds
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot while one request is sent and its response read."""
        me = [os.getpid(), next(self._tokens)]
        while True:
            with self._state() as state:
                now = time.monotonic()
                self._reclaim(state, now)
                wait = wait_seconds(self._rates, state["completed"], len(state["in_flight"]), now)
                if wait <= 0:
                    state["in_flight"].append([*me, now])
                    break
            time.sleep(min(wait, POLL_SECONDS))
        try:
            yield
        finally:
            with self._state() as state:
                state["in_flight"] = [s for s in state["in_flight"] if s[:2] != me]
                self._complete(state, time.monotonic())

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """The budget's state, read and written back under an exclusive lock on the file."""
        # A descriptor per operation: flock belongs to the open file, so threads (and forked
        # children) never share a lock they think is theirs alone.
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = _decode(os.pread(fd, 1 << 20, 0))
            yield state
            data = _encode(state)
            # The header counts what follows, so bytes left from a longer state are ignored.
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)  # closing releases the lock

    def _reclaim(self, state: dict[str, Any], now: float) -> None:
        """Slots of processes that died mid-request count as completed now."""
        alive = []
        for entry in state["in_flight"]:
            pid, _token, started = entry
            if _running(pid) and now - started < self._stale_after:
                alive.append(entry)
            else:
                self._complete(state, now)
        state["in_flight"] = alive

    def _complete(self, state: dict[str, Any], now: float) -> None:
        # Sources sharing a budget may declare different limits: never drop stamps another
        # process with a larger limit still counts.
        keep = max(self._keep, len(state["completed"]))
        state["completed"] = [*state["completed"], now][-keep:]


# Binary, not JSON: with 500 stamps (requests_per_minute: 500) JSON cost ~0.6 ms a slot.
_HEADER = struct.Struct("<II")  # slots in flight, completion stamps
_SLOT = struct.Struct("<qqd")  # pid, token, started


def _encode(state: dict[str, Any]) -> bytes:
    slots, stamps = state["in_flight"], state["completed"]
    parts = [_HEADER.pack(len(slots), len(stamps))]
    parts += [_SLOT.pack(*slot) for slot in slots]
    parts.append(array("d", stamps).tobytes())
    return b"".join(parts)


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        in_flight, completed = _HEADER.unpack_from(raw)
        offset = _HEADER.size
        slots = [list(_SLOT.unpack_from(raw, offset + i * _SLOT.size)) for i in range(in_flight)]
        offset += in_flight * _SLOT.size
        stamps = array("d", raw[offset : offset + 8 * completed])
        if len(stamps) != completed:
            raise ValueError("short file")
    except (struct.error, ValueError):
        # Empty (a new budget) or not ours: start afresh rather than block for ever.
        return {"in_flight": [], "completed": []}
    return {"in_flight": slots, "completed": stamps.tolist()}


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno != errno.ESRCH
    return True
