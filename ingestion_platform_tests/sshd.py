"""A real OpenSSH sshd on a free loopback port, with a temporary host key and user key.

Registered for every test module by `pytest_plugins` in conftest.py. The
server runs `/usr/sbin/sshd -D -e -f CONFIG` as the current user (root is fine); a missing
sshd is a failure, never a skip: `make services` installs openssh-server.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingestion_platform_tests.servers import free_port, stop_process, wait_listening

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    """A running sshd serving `root` (a folder), reachable with `user_key`."""

    port: int
    user: str
    root: Path
    user_key: Path
    host_key_line: str  # "ssh-ed25519 AAAA…", the value a defs.yaml pins
    process: subprocess.Popen[bytes]
    config: Path

    def attributes(self, **extra: object) -> dict[str, object]:
        """The connection part of a source declaration pointing at this server."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "username": self.user,
            "private_key": str(self.user_key),
            "host_key": self.host_key_line,
            "path": str(self.root),
            **extra,
        }

    def stop(self) -> None:
        stop_process(self.process)


def keygen(path: Path, kind: str = "ed25519") -> str:
    """Write a new key pair at `path` and return the public key line (without comment)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)], check=True
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def start_sshd(workdir: Path, root: Path, *, sftp: bool = True) -> Sshd:
    """Start sshd on a free loopback port; `sftp=False` leaves out the SFTP subsystem."""
    if not os.path.exists(SSHD):
        pytest.fail(f"{SSHD} is missing; run `make services` (installs openssh-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    host_key = workdir / "host_ed25519"
    host_line = keygen(host_key)
    user_key = workdir / "user_ed25519"
    authorized = workdir / "authorized_keys"
    authorized.write_text(keygen(user_key) + "\n")
    os.chmod(authorized, 0o600)
    port = free_port()
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}",
        f"PidFile {workdir / 'sshd.pid'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        "LogLevel ERROR",
    ]
    if sftp:
        lines.append("Subsystem sftp internal-sftp")
    config = workdir / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    log = open(workdir / "sshd.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log, stdout=log)
    wait_listening(port, process, "sshd", seconds=10, interval=0.05, log=workdir / "sshd.log")
    return Sshd(port, getpass.getuser(), root, user_key, host_line, process, config)


# Runs a test against OpenSSH's sftp-server and against asyncssh's, a second implementation.
BOTH_SFTP_SERVERS = pytest.mark.parametrize("sshd", ["openssh", "asyncssh"], indirect=True)


class ThrottledProxy:
    """A TCP relay in front of a server: what the server sends is limited to `rate` bytes per
    second (None: unlimited), and `drop()` cuts every open connection as a failing network
    would. Sources point their `port` at it; the host key is still the sshd's own."""

    def __init__(self, target_port: int, rate: float | None = None) -> None:
        self.target_port = target_port
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._stalled = threading.Event()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, throttled: bool) -> None:
        try:
            while chunk := source.recv(32768):
                while throttled and self._stalled.is_set() and not self._closed.is_set():
                    time.sleep(0.05)  # a hung partner: the bytes are held, nothing is closed
                sink.sendall(chunk)
                if throttled and self.rate:
                    time.sleep(len(chunk) / self.rate)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def drop(self) -> None:
        """Cut every connection open now (new ones still go through)."""
        sockets, self._sockets = self._sockets, []
        for end in sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def stall(self) -> None:
        """From now on, forward nothing the server sends, keeping every connection open."""
        self._stalled.set()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.drop()


@pytest.fixture
def sshd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Sshd]:
    """An sshd with the SFTP subsystem, serving an empty folder `tmp_path/remote`.

    OpenSSH's; a test marked `BOTH_SFTP_SERVERS` runs a second time against asyncssh's."""
    root = tmp_path / "remote"
    root.mkdir()
    if getattr(request, "param", "openssh") == "asyncssh":
        from ingestion_platform_tests.asyncssh_sftpd import start_asyncssh_sftpd

        server = start_asyncssh_sftpd(tmp_path / "sshd", root)
    else:
        server = start_sshd(tmp_path / "sshd", root)
    yield server
    server.stop()


@pytest.fixture
def scp_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An sshd without any SFTP subsystem (SCP and commands only), serving `tmp_path/remote`."""
    root = tmp_path / "remote"
    root.mkdir(exist_ok=True)
    server = start_sshd(tmp_path / "scp_sshd", root, sftp=False)
    yield server
    server.stop()
