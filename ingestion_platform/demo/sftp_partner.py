"""A stand-in partner for the demo: an OpenSSH sshd serving a drop folder, and a partner
that uploads a file into it every minute or so (now and then a malformed or latin-1 one).

The server's host key is generated once and kept in `data/demo/sftp/`; it is written to
`data/demo/sftp/known_hosts`, which the `partner_files` source pins, as a real partner's
key would be pinned. Uploads go to `<name>.part` and are renamed when complete, the way
most partner tools upload.

    python -m ingestion_platform.demo.sftp_partner --port 2322 --every 60
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

STATE = Path("data/demo/sftp")
DROP = Path("data/demo/partner_drop")


def _key(path: Path) -> None:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
        )


def start_server(port: int) -> subprocess.Popen[bytes]:
    """Start sshd on 127.0.0.1:`port` with the demo's persistent host key and user key."""
    STATE.mkdir(parents=True, exist_ok=True)
    DROP.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)
    host_key, user_key = STATE / "host_ed25519", STATE / "partner_user_key"
    _key(host_key)
    _key(user_key)
    authorized = STATE / "authorized_keys"
    authorized.write_text(user_key.with_suffix(".pub").read_text())
    os.chmod(authorized, 0o600)
    public = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    (STATE / "known_hosts").write_text(f"[127.0.0.1]:{port} {public}\n")
    config = STATE / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key.absolute()}\n"
        f"AuthorizedKeysFile {authorized.absolute()}\nPidFile {(STATE / 'sshd.pid').absolute()}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n"
        f"Subsystem sftp internal-sftp -d {DROP.absolute()}\n"
    )
    return subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config.absolute())])


def partner_file(rng: random.Random, serial: int) -> tuple[str, bytes]:
    """One partner drop: usually good orders, sometimes malformed rows or latin-1 text."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    lines = ["order_id,customer,amount,city"]
    for index in range(rng.randint(20, 200)):
        lines.append(
            f"{serial * 1000 + index},cust_{rng.randint(1, 50)},{rng.randint(1, 99999) / 100},Lyon"
        )
    if serial % 5 == 4:  # malformed rows: a text amount, a short row
        lines[3] = f"{serial * 1000 + 2},cust_1,not-a-number,Lyon"
        lines.append("only,three,fields")
    if serial % 7 == 6:
        text = "\n".join(lines).replace("Lyon", "Orléans") + "\n"
        return f"orders_{stamp}_latin1.csv", text.encode("latin-1")
    return f"orders_{stamp}.csv", ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=2322)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between uploads")
    args = parser.parse_args()
    server = start_server(args.port)
    rng = random.Random(8)
    serial = 0
    try:
        while server.poll() is None:
            name, body = partner_file(rng, serial)
            part = DROP / f"{name}.part"
            part.write_bytes(body)
            part.rename(DROP / name)
            serial += 1
            time.sleep(args.every * rng.uniform(0.7, 1.3))
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
