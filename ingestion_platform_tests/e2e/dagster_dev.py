"""The real thing for end-to-end tests: `dagster dev` (webserver + daemon) on the project.

It runs from the demo's workspace (the user's code location and the demo's) and the
project's `dagster.yaml`, with a temporary
DAGSTER_HOME, warehouse and working folder (the demo's SQLite shop lives there), and
binds 127.0.0.1 on a free port. `instance` replaces top-level sections of the project's
`dagster.yaml` (e.g. `storage:` on PostgreSQL, the production profile) and `workspace`
another workspace file (e.g. the demo's plus a test-only code location). Stopping sends
SIGINT to the whole process group, as Ctrl-C does, and SIGKILL to whatever is left after a
grace period.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ingestion_platform_tests.servers import free_port

PROJECT = Path(__file__).resolve().parents[2]
DAGSTER = PROJECT / ".venv" / "bin" / "dagster"
DEMO_WORKSPACE = PROJECT / "ingestion_platform" / "demo" / "workspace.yaml"
# A traceback's lines that say nothing of their own.
FRAMING = {
    "Traceback (most recent call last):",
    "Stack Trace:",
    "The above exception was caused by the following exception:",
}


@dataclass
class DagsterDev:
    """A running `dagster dev` over the project, in its own folder."""

    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    instance: dict[str, Any] = field(default_factory=dict)
    workspace: Path = DEMO_WORKSPACE
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return self.folder / "dagster_home"

    @property
    def warehouse_path(self) -> Path:
        return self.folder / "warehouse.duckdb"

    @property
    def log_path(self) -> Path:
        return self.folder / "dagster_dev.log"

    def environment(self) -> dict[str, str]:
        """What every process of this deployment sees: its instance, warehouse and `env`."""
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "INGESTION_WAREHOUSE_PATH": str(self.warehouse_path),
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            **self.env,
        }

    def start(self, timeout: float = 240) -> DagsterDev:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.instance:
            settings = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
            (self.home / "dagster.yaml").write_text(yaml.safe_dump({**settings, **self.instance}))
        else:
            shutil.copy(PROJECT / "dagster.yaml", self.home / "dagster.yaml")
        environment = self.environment()
        log = self.log_path.open("ab")
        # As `make install` does: create the storage before anything races to.
        subprocess.run(
            [str(DAGSTER), "instance", "migrate"], env=environment, stdout=log, check=True
        )
        self.process = subprocess.Popen(
            [str(DAGSTER), "dev", "-h", "127.0.0.1", "-p", str(self.port),
             "-w", str(self.workspace)],
            cwd=self.folder,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {self.log_tail()}")
            if self._location_loaded():
                return self
            time.sleep(1)
        raise TimeoutError(f"dagster dev did not load the code location: {self.log_tail()}")

    def _location_loaded(self) -> bool:
        try:
            answer = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { "
                "locationOrLoadError { __typename } } } } }",
                timeout=5,
            )
        except OSError:
            return False
        entries = answer["data"]["workspaceOrError"].get("locationEntries") or []
        kinds = [(e.get("locationOrLoadError") or {}).get("__typename") for e in entries]
        if "PythonError" in kinds:
            raise RuntimeError(f"the code location failed to load: {self.log_tail()}")
        return bool(kinds) and all(kind == "RepositoryLocation" for kind in kinds)

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 60):
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer

    def stop(self, grace: float = 30) -> float:
        """Stop everything `dagster dev` started; returns how long it took."""
        assert self.process is not None
        started = time.monotonic()
        try:
            os.killpg(self.process.pid, signal.SIGINT)
        except ProcessLookupError:
            return 0.0
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # Children (webserver, daemon, code server) share the group; leave none behind.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        return time.monotonic() - started

    def log_tail(self, lines: int = 40) -> str:
        """The log's last lines, tracebacks' frames left out but for the very last ones.

        The demo's sensors whose secrets a test does not set fail every tick with a long
        traceback, which would fill the tail and hide the daemon's own lines."""
        if not self.log_path.exists():
            return "(no log)"
        log = self.log_path.read_text(errors="replace").splitlines()
        headlines = [line for line in log[:-15] if line[:1].strip() and line not in FRAMING]
        return "\n".join([*headlines[-lines:], *log[-15:]])
