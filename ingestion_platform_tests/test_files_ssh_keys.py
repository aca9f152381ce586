"""A partner's server reached with a passphrase-protected private key, as `ssh-keygen` writes
one: the listing (paramiko), the SFTP transfer (asyncssh) and SCP all unlock it, and a
wrong or missing passphrase fails naming the fix, never showing the passphrase."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.core.declaration import SourceFailure
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.files.component import SftpFileSource
from ingestion_platform_tests.files_helpers import keys, rows, tick
from ingestion_platform_tests.sources import build_source, materialize
from ingestion_platform_tests.sshd import Sshd

PASSPHRASE = "correct horse battery staple"


def _encrypted_key(server: Sshd, tmp_path: Path, kind: str) -> str:
    """A new key pair of `kind` protected by PASSPHRASE, authorised on `server`: its text."""
    key = tmp_path / f"partner_{kind}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", PASSPHRASE, "-C", "", "-f", str(key)],
        check=True,
    )
    authorized = server.user_key.parent / "authorized_keys"  # sshd reads it at every login
    with authorized.open("a") as out:
        out.write(key.with_suffix(".pub").read_text())
    return key.read_text()


def _defs(tmp_path: Path, server: Sshd, **extra: object) -> dg.Definitions:
    attributes = server.attributes(
        private_key={"env": "PARTNER_SFTP_KEY"},
        passphrase={"env": "PARTNER_KEY_PASSPHRASE"},
        table="orders",
        settle="0s",
        **extra,
    )
    return build_source(SftpFileSource, tmp_path / "partner", attributes)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_an_encrypted_key_lists_and_transfers_over_sftp(
    kind: str,
    tmp_path: Path,
    sshd: Sshd,
    monkeypatch: pytest.MonkeyPatch,
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources: dict,
) -> None:
    monkeypatch.setenv("PARTNER_SFTP_KEY", _encrypted_key(sshd, tmp_path, kind))
    monkeypatch.setenv("PARTNER_KEY_PASSPHRASE", PASSPHRASE)
    (sshd.root / "orders_1.csv").write_text("id,amount\n1,2.5\n2,3.5\n")
    defs = _defs(tmp_path, sshd)
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, amount, _file from partner.orders order by id") == [
        (1, 2.5, "orders_1.csv"),
        (2, 3.5, "orders_1.csv"),
    ]


def test_an_encrypted_key_transfers_over_scp(
    tmp_path: Path,
    scp_sshd: Sshd,
    monkeypatch: pytest.MonkeyPatch,
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources: dict,
) -> None:
    monkeypatch.setenv("PARTNER_SFTP_KEY", _encrypted_key(scp_sshd, tmp_path, "ed25519"))
    monkeypatch.setenv("PARTNER_KEY_PASSPHRASE", PASSPHRASE)
    (scp_sshd.root / "p.csv").write_text("id\n7\n")
    defs = _defs(tmp_path, scp_sshd, transport="scp")
    (key,) = keys(tick(defs, instance))
    materialize(defs, partition_key=key, resources=resources, instance=instance)
    assert rows(warehouse, "select id, _file from partner.orders") == [(7, "p.csv")]


def test_a_wrong_passphrase_fails_the_tick_naming_the_fix_without_showing_it(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    monkeypatch.setenv("PARTNER_SFTP_KEY", _encrypted_key(sshd, tmp_path, "ed25519"))
    monkeypatch.setenv("PARTNER_KEY_PASSPHRASE", "not the passphrase")
    (sshd.root / "orders_1.csv").write_text("id\n1\n")
    with pytest.raises(SourceFailure) as failed:
        tick(_defs(tmp_path, sshd), instance)
    # Before, paramiko's words only: "OpenSSH private key file checkints do not match".
    assert str(failed.value) == (
        f"source 'partner' ({tmp_path / 'partner' / 'defs.yaml'}): the private key is "
        "encrypted and `passphrase` does not open it: check the passphrase, and that it "
        "belongs to this key"
    )


def test_an_encrypted_key_without_a_passphrase_fails_the_tick_naming_the_field(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    monkeypatch.setenv("PARTNER_SFTP_KEY", _encrypted_key(sshd, tmp_path, "rsa"))
    attributes = sshd.attributes(private_key={"env": "PARTNER_SFTP_KEY"}, settle="0s")
    defs = build_source(SftpFileSource, tmp_path / "partner", attributes)
    with pytest.raises(SourceFailure) as failed:
        tick(defs, instance)
    assert str(failed.value) == (
        f"source 'partner' ({tmp_path / 'partner' / 'defs.yaml'}): the private key is "
        "encrypted; set `passphrase`"
    )
