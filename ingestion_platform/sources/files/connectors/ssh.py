"""An SSH connection with the server's key verified, shared by SFTP listing, SCP and transfers.

The host key is checked against a pinned key (`ssh-ed25519 AAAA…`) or a known_hosts file;
an unknown or changed key fails with the key seen and how to pin it. Skipping the check
needs an explicit `insecure_skip_host_key_check`, never a silent AutoAddPolicy. The same
settings configure paramiko (listing, SCP) and asyncssh (bulk transfer), so the key check
and the credentials can never differ between the two.
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
from dataclasses import dataclass

import paramiko

CONNECT_TIMEOUT_SECONDS = 15


class HostKeyError(ConnectionError):
    """The server's key is not the one pinned or known."""


class SshUnreachable(ConnectionError):
    """The server did not accept a TCP connection (down, wrong host or port, firewalled)."""


class SshAuthError(ConnectionError):
    """The server refused the configured credentials."""


class TransferStalled(ConnectionError):
    """No byte arrived for the source's `transfer_timeout`: the partner or the network hung."""


@dataclass(frozen=True)
class SshSettings:
    """Where to connect and how to prove who we are and who the server is (values resolved)."""

    host: str
    port: int
    username: str
    private_key: str | None = None  # PEM/OpenSSH text of the key
    passphrase: str | None = None
    password: str | None = None
    host_key: str | None = None  # "ssh-ed25519 AAAA…"
    known_hosts: str | None = None  # path of a known_hosts file
    insecure_skip_host_key_check: bool = False

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def pinned_keys(self) -> list[paramiko.PKey]:
        """The keys the server may present: the pinned one, or its known_hosts entries."""
        if self.host_key:
            kind, _, blob = self.host_key.strip().partition(" ")
            return [paramiko.PKey.from_type_string(kind, base64.b64decode(blob.split()[0]))]
        if self.known_hosts:
            known = paramiko.HostKeys(self.known_hosts)
            entry = known.lookup(self.known_hosts_name) or {}
            return list(entry.values())
        return []

    def user_key(self) -> paramiko.PKey | None:
        if not self.private_key:
            return None
        problem = "not an Ed25519, ECDSA or RSA private key"
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return kind.from_private_key(io.StringIO(self.private_key), self.passphrase)
            except paramiko.PasswordRequiredException:
                raise SshAuthError("the private key is encrypted; set `passphrase`") from None
            except (paramiko.SSHException, ValueError) as error:
                problem = str(error) or problem
        if self.passphrase and self._encrypted():
            # paramiko says "checkints do not match" or "Bad decrypt" for a wrong passphrase.
            raise SshAuthError(
                "the private key is encrypted and `passphrase` does not open it: check the "
                "passphrase, and that it belongs to this key"
            )
        raise SshAuthError(f"cannot read the private key: {problem}")

    def _encrypted(self) -> bool:
        """Whether the private key asks for a passphrase (tried with none)."""
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                kind.from_private_key(io.StringIO(self.private_key or ""), None)
            except paramiko.PasswordRequiredException:
                return True
            except (paramiko.SSHException, ValueError):
                continue
        return False


def fingerprint(key: paramiko.PKey) -> str:
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def open_transport(settings: SshSettings, log_warning: object = None) -> paramiko.Transport:
    """An authenticated paramiko transport whose server key has been verified."""
    pinned = settings.pinned_keys()
    if not pinned and not settings.insecure_skip_host_key_check:
        raise HostKeyError(
            f"no host key to verify {settings.host}:{settings.port} against. Fix: pin it "
            'with `host_key: "<type> <base64>"` (ask the partner, or read it with '
            f"`ssh-keyscan -p {settings.port} {settings.host}` over a trusted network) or "
            "point `known_hosts:` at a file that lists it"
        )
    try:
        sock = socket.create_connection((settings.host, settings.port), CONNECT_TIMEOUT_SECONDS)
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise SshUnreachable(
            f"cannot reach {settings.host}:{settings.port}: {reason.lower()}. Fix: check that "
            "the server is up and that `host` and `port` point at it"
        ) from None
    transport = paramiko.Transport(sock)
    try:
        if pinned:
            # Ask for the pinned key types, so a server with several keys shows a pinned one.
            options = transport.get_security_options()
            wanted = [k.get_name() for k in pinned]
            options.key_types = tuple(wanted) + tuple(
                t for t in options.key_types if t not in wanted
            )
        transport.start_client(timeout=CONNECT_TIMEOUT_SECONDS)
        seen = transport.get_remote_server_key()
        if pinned and not any(seen == key for key in pinned):
            raise HostKeyError(host_key_mismatch(settings, seen, pinned))
        _authenticate(transport, settings)
    except BaseException:
        transport.close()
        raise
    return transport


def host_key_mismatch(settings: SshSettings, seen: paramiko.PKey, pinned: list) -> str:
    where = "host_key" if settings.host_key else f"known_hosts ({settings.known_hosts})"
    expected = ", ".join(fingerprint(k) for k in pinned) or "no entry for this host"
    return (
        f"host key of {settings.host}:{settings.port} is not the one in {where}: the server "
        f"presented {seen.get_name()} {fingerprint(seen)} (expected {expected}). If the "
        "partner confirms it changed its key, pin the new one: "
        f'host_key: "{key_line(seen)}"'
    )


def _authenticate(transport: paramiko.Transport, settings: SshSettings) -> None:
    key = settings.user_key()
    try:
        if key is not None:
            transport.auth_publickey(settings.username, key)
        elif settings.password is not None:
            transport.auth_password(settings.username, settings.password)
        else:
            raise SshAuthError("no credentials: set `private_key` or `password`")
    except paramiko.AuthenticationException as error:
        raise SshAuthError(
            f"{settings.username}@{settings.host}:{settings.port} refused the credentials ({error})"
        ) from None
    if not transport.is_authenticated():
        raise SshAuthError(f"{settings.username}@{settings.host} is not authenticated")
