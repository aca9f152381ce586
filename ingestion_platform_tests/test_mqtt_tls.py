"""MQTT over TLS, as IoT brokers serve it (port 8883; AWS IoT Core also asks each client
for its certificate): a Mosquitto of the test's own with a private CA that requires a client
certificate. With `tls: {ca_file, cert_file, key_file}` the drain lands every message; a
client without its certificate, or trusting only the system's CAs, fails naming the fix."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from paho.mqtt import publish

from ingestion_platform.core.declaration import SourceFailure
from ingestion_platform.core.warehouse import Warehouse
from ingestion_platform.sources.mqtt.component import MqttSource
from ingestion_platform_tests.brokers import start_mosquitto
from ingestion_platform_tests.e2e.dagster_dev import free_port
from ingestion_platform_tests.sources import (
    build_source,
    materialize,
    requested_keys,
    tick_size_sensor,
)


def _openssl(*arguments: str, cwd: Path) -> None:
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True)


def _signed(name: str, subject: str, folder: Path, extensions: str) -> None:
    """`name`.key and `name`.pem, signed by the CA in `folder`."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-subj", subject, "-out", f"{name}.csr", cwd=folder)  # fmt: skip
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
             "-out", f"{name}.pem", cwd=folder)  # fmt: skip


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A Mosquitto on loopback speaking only TLS, with certificates from a CA of its own
    (`ca.pem`, `client.pem`/`client.key` in the returned folder); a client certificate is
    required."""
    pki = tmp_path / "pki"
    pki.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-subj", "/CN=test fleet CA", "-days", "2", "-out", "ca.pem", cwd=pki)  # fmt: skip
    _signed("server", "/CN=127.0.0.1", pki, "subjectAltName=IP:127.0.0.1\n")
    _signed("client", "/CN=ingestion-platform", pki, "extendedKeyUsage=clientAuth\n")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\n"
        # Run as root (the suite is), it would switch to the `mosquitto` user, who cannot
        # read the keys in this test's folder.
        "user root\n"
    )
    broker = start_mosquitto(config, port)
    yield port, pki
    broker.terminate()
    broker.wait(timeout=10)


def _defs(tmp_path: Path, port: int, prefix: str, tls: object) -> dg.Definitions:
    attributes = {
        "port": port,
        "tls": tls,
        "topics": [f"{prefix}/+/temp"],
        "client_id": f"test-{prefix}",
        "table": "readings",
        "batch": {"records": 10},
        "drain_seconds": 5,
    }
    return build_source(MqttSource, tmp_path / "iot", attributes)


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult:
    return tick_size_sensor(defs, instance, "iot__size_sensor")


def test_a_broker_asking_for_a_client_certificate_is_drained_with_one(
    tls_broker: tuple[int, Path],
    tmp_path: Path,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    instance: dg.DagsterInstance,
    warehouse: Warehouse,
    resources: dict,
) -> None:
    port, pki = tls_broker
    monkeypatch.setenv("INGESTION_WAREHOUSE_PATH", str(warehouse_path))
    monkeypatch.setenv("FLEET_MQTT_KEY_FILE", str(pki / "client.key"))
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    tls = {
        "ca_file": str(pki / "ca.pem"),
        "cert_file": str(pki / "client.pem"),
        "key_file": {"env": "FLEET_MQTT_KEY_FILE"},
    }
    defs = _defs(tmp_path, port, prefix, tls)
    assert requested_keys(_tick(defs, instance)) == []  # subscribed: the session keeps ours
    publish.multiple(
        [
            {"topic": f"{prefix}/truck{n % 2}/temp", "payload": json.dumps({"id": n}), "qos": 1}
            for n in range(12)
        ],
        hostname="127.0.0.1",
        port=port,
        tls={
            "ca_certs": str(pki / "ca.pem"),
            "certfile": str(pki / "client.pem"),
            "keyfile": str(pki / "client.key"),
        },
    )
    assert requested_keys(_tick(defs, instance)) == ["..10"]
    materialize(defs, partition_key="..10", resources=resources, instance=instance)
    assert warehouse.query("select count(*), min(id), max(id) from iot.readings") == [(10, 0, 9)]
    assert warehouse.query("select count(*) from iot._buffer") == [(12,)]


@pytest.mark.parametrize(
    ("tls", "problem"),
    [
        # Only the system's CAs: the broker's private CA is not among them.
        (True, "certificate verify failed: self-signed certificate in certificate chain"),
        # The right CA, but no client certificate for a broker that requires one.
        ("ca_only", "tlsv13 alert certificate required"),
    ],
)
def test_a_tls_handshake_that_fails_names_the_fix(
    tls: object,
    problem: str,
    tls_broker: tuple[int, Path],
    tmp_path: Path,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    instance: dg.DagsterInstance,
) -> None:
    port, pki = tls_broker
    monkeypatch.setenv("INGESTION_WAREHOUSE_PATH", str(warehouse_path))
    declared = {"ca_file": str(pki / "ca.pem")} if tls == "ca_only" else tls
    defs = _defs(tmp_path, port, "fleet-x", declared)
    with pytest.raises(SourceFailure) as failed:
        _tick(defs, instance)
    message = str(failed.value)
    assert message.startswith(
        f"source 'iot' ({tmp_path / 'iot' / 'defs.yaml'}): TLS with MQTT broker "
        f"127.0.0.1:{port} failed: "
    ), message
    assert f"failed: {problem}. Fix: " in message, message
    assert message.endswith(
        "Fix: check the broker's certificate against `tls.ca_file` (the system's CAs when "
        "unset) and, if the broker asks for one, the client certificate in `tls.cert_file` "
        "and `tls.key_file`"
    ), message


def test_a_client_certificate_without_its_key_is_refused_naming_the_field(
    tmp_path: Path, warehouse_path: Path, monkeypatch: pytest.MonkeyPatch, instance
) -> None:
    monkeypatch.setenv("INGESTION_WAREHOUSE_PATH", str(warehouse_path))
    defs = _defs(tmp_path, 8883, "fleet-y", {"cert_file": "/etc/fleet/client.pem"})
    with pytest.raises(Exception) as failed:
        _tick(defs, instance)
    assert "tls: cert_file and key_file go together" in str(failed.value)
    assert "set both, or neither" in str(failed.value)


def test_a_tls_file_that_is_not_there_is_named_with_the_fix(
    tmp_path: Path, warehouse_path: Path, monkeypatch: pytest.MonkeyPatch, instance
) -> None:
    monkeypatch.setenv("INGESTION_WAREHOUSE_PATH", str(warehouse_path))
    defs = _defs(tmp_path, 8883, "fleet-z", {"ca_file": str(tmp_path / "missing.pem")})
    with pytest.raises(SourceFailure) as failed:
        _tick(defs, instance)
    assert str(failed.value) == (
        f"source 'iot' ({tmp_path / 'iot' / 'defs.yaml'}): tls.ca_file: "
        f"{tmp_path / 'missing.pem'} is not a file on this machine. Fix: point it at the PEM "
        "file, on every machine that runs the source's sensor"
    )
