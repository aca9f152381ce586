"""A second SFTP server for the tests: asyncssh's own, not OpenSSH's, on a free loopback port.

The file sources are written against OpenSSH's sftp-server; real partners also run other
servers, which answer some requests differently (no `limits@openssh.com`, its own listing
format). This one runs in its own process, takes one user key
and presents one host key. Like the tests' sshd, it serves the whole file system to the
user, so it stands in for `start_sshd` (same `Sshd` fields).

    python -m ingestion_platform_tests.asyncssh_sftpd ROOT PORT HOST_KEY AUTHORIZED_KEYS
"""

from __future__ import annotations

import asyncio
import getpass
import subprocess
import sys
from pathlib import Path

from ingestion_platform_tests.servers import free_port, wait_listening
from ingestion_platform_tests.sshd import Sshd, keygen


def start_asyncssh_sftpd(workdir: Path, root: Path) -> Sshd:
    """Start the server in a child process; its `process` and `config` (the log) as sshd's."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "host_ed25519"
    host_line = keygen(host_key)
    user_key = workdir / "user_ed25519"
    authorized = workdir / "authorized_keys"
    authorized.write_text(keygen(user_key) + "\n")
    port = free_port()
    log_path = workdir / "asyncssh_sftpd.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", __name__, str(root), str(port), str(host_key), str(authorized)],
        stdout=log,
        stderr=log,
    )
    wait_listening(port, process, "asyncssh's SFTP server", seconds=20, interval=0.05, log=log_path)
    return Sshd(port, getpass.getuser(), root, user_key, host_line, process, log_path)


def main(root: str, port: str, host_key: str, authorized_keys: str) -> None:
    import asyncssh

    async def serve() -> None:
        await asyncssh.listen(
            "127.0.0.1",
            int(port),
            server_host_keys=[host_key],
            authorized_client_keys=authorized_keys,
            sftp_factory=True,
            allow_scp=False,
        )
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main(*sys.argv[1:5])
