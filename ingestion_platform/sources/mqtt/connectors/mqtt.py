"""MQTT topics drained land-then-ack: messages are acknowledged only after they are committed.

An MQTT broker forgets a QoS 1 message once its subscriber acknowledges it, so the topic
cannot be read twice. The platform subscribes with a fixed client id and a persistent
session (`clean_session=False`): messages published while it is away wait at the broker.
It takes a batch of messages, hands them to `commit` (which writes them to a durable buffer
in the warehouse, in one transaction) and acknowledges them only once `commit` returned.
A process killed between the two leaves the messages unacknowledged: the broker delivers
them again at the next connection, and the buffer's message ids keep them from landing
twice. Brokers cap the unacknowledged messages in flight per client (Mosquitto:
`max_inflight_messages`, 20 by default; RabbitMQ's MQTT plugin: `mqtt.prefetch`, 10) and
send no more until some are acknowledged, so a drain commits in windows: a window is
committed once `batch` messages arrived or once the flow pauses for `PAUSE_SECONDS` (the
broker waits for acknowledgements), and takes all that arrived. The drain ends when nothing
arrives for `idle_seconds`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

# Mosquitto's default max_inflight_messages: a window is committed at this many at the latest.
DEFAULT_BATCH = 20
# A gap this long after a message means the broker holds the rest back until it gets
# acknowledgements. Waiting for a full batch instead cost `idle_seconds` per window on a
# broker whose window is smaller (RabbitMQ: 10 messages per 0.5 s, 19 messages/s).
PAUSE_SECONDS = 0.05


@dataclass(frozen=True)
class TlsFiles:
    """TLS for the connection: the system's CAs unless `ca_file`; a client certificate if
    `cert_file` and `key_file` (paths of PEM files)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class MqttSettings:
    """Where the broker is, what to subscribe to and how to sign in (secrets resolved)."""

    host: str
    port: int
    topics: list[str]
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    qos: int = 1
    timeout_seconds: float = 10.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MqttMessage:
    """A message as received: its id (see `message_id`), topic, payload and arrival time."""

    message_id: str
    topic: str
    payload: bytes
    arrived_ms: int
    mid: int = field(compare=False, default=0)


class MqttUnreachable(ConnectionError):
    """The broker cannot be reached or refused the credentials."""


def message_id(topic: str, payload: bytes) -> str:
    """The id a redelivery is recognised by. MQTT 3.1.1 carries none, so: the producer's
    `message_id` field when the payload is a JSON object that has one, else a hash of the
    topic and payload (two identical payloads on one topic then count once)."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        value = None
    if isinstance(value, dict) and value.get("message_id") is not None:
        return f"{topic}:{value['message_id']}"
    return "sha256:" + hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


def drain(
    settings: MqttSettings,
    commit: Callable[[list[MqttMessage]], None],
    *,
    max_messages: int = 10_000,
    max_seconds: float = 10.0,
    idle_seconds: float = 0.5,
    batch: int = DEFAULT_BATCH,
) -> int:
    """Commit then acknowledge what the broker holds for this client; returns how many."""
    received: list[MqttMessage] = []
    arrived = threading.Condition()
    connected: dict[str, Any] = {}

    def on_connect(client: mqtt.Client, _data: Any, _flags: Any, reason: Any, _p: Any) -> None:
        with arrived:
            connected["reason"] = reason
            arrived.notify_all()

    def on_log(_client: mqtt.Client, _data: Any, level: int, text: str) -> None:
        # A TLS 1.3 server refuses a client certificate (or its absence) after the handshake:
        # the socket error only reaches paho's log, then the connection closes unanswered.
        if level == mqtt.MQTT_LOG_ERR and "SSL" in text:
            with arrived:
                connected["tls_error"] = text.split(": ", 1)[-1]  # after "failed to …: "
                arrived.notify_all()

    def on_message(_client: mqtt.Client, _data: Any, message: mqtt.MQTTMessage) -> None:
        with arrived:
            received.append(
                MqttMessage(
                    message_id(message.topic, message.payload),
                    message.topic,
                    bytes(message.payload),
                    int(time.time() * 1000),
                    message.mid,
                )
            )
            arrived.notify_all()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    client.manual_ack_set(True)
    client.on_connect = on_connect
    client.on_message = on_message
    client.on_log = on_log
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls is not None:
        _use_tls(client, settings)
    try:
        client.connect(settings.host, settings.port, keepalive=60)
    except ssl.SSLError as error:
        raise _tls_failed(settings, str(error)) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise MqttUnreachable(
            f"cannot reach MQTT broker {settings.address}: {reason}. Fix: start the broker, "
            "or correct `host:` and `port:`"
        ) from None
    client.loop_start()
    try:
        with arrived:
            arrived.wait_for(
                lambda: "reason" in connected or "tls_error" in connected,
                timeout=settings.timeout_seconds,
            )
        # Only the connect's errors are wanted: paho would format a line per packet for it.
        client.on_log = None
        reason = connected.get("reason")
        if reason is None and "tls_error" in connected:
            raise _tls_failed(settings, connected["tls_error"])
        if reason is None:
            raise MqttUnreachable(
                f"MQTT broker {settings.address} did not answer the connect within "
                f"{settings.timeout_seconds:g}s. Fix: check that `host:` and `port:` point at "
                "an MQTT broker (with `tls:` if it listens for TLS)"
            )
        if reason.is_failure:
            raise MqttUnreachable(
                f"MQTT broker {settings.address} refused the connection: {reason}. "
                f"Fix: {_refusal_fix(str(reason))}"
            )
        client.subscribe([(topic, settings.qos) for topic in settings.topics])
        return _take(client, received, arrived, commit, max_messages, max_seconds,
                     idle_seconds, batch)  # fmt: skip
    finally:
        client.loop_stop()
        client.disconnect()


def _refusal_fix(reason: str) -> str:
    """What to change for a CONNACK refusal (MQTT 3.1.1 return codes 1 to 5)."""
    said = reason.lower()
    if "authori" in said or "password" in said:
        return "correct `username:` and `password:` (or the environment variables they name)"
    if "identifier" in said:
        return "set `client_id:` to a name the broker accepts, or leave it unset"
    return "read the broker's log for why it turned the session away"


def _tls_failed(settings: MqttSettings, ssl_error: str) -> MqttUnreachable:
    # "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: … (_ssl.c:1006)"
    said = re.sub(r"^\[SSL: \w+\] | \(_ssl\.c:\d+\)$", "", ssl_error)
    return MqttUnreachable(
        f"TLS with MQTT broker {settings.address} failed: {said}. Fix: check the broker's "
        "certificate against `tls.ca_file` (the system's CAs when unset) and, if the broker "
        "asks for one, the client certificate in `tls.cert_file` and `tls.key_file`"
    )


def _use_tls(client: mqtt.Client, settings: MqttSettings) -> None:
    files = settings.tls
    assert files is not None
    for name, path in (("ca_file", files.ca_file), ("cert_file", files.cert_file),
                       ("key_file", files.key_file)):  # fmt: skip
        if path is not None and not os.path.isfile(path):
            raise MqttUnreachable(
                f"tls.{name}: {path} is not a file on this machine. Fix: point it at the PEM "
                "file, on every machine that runs the source's sensor"
            )
    try:
        client.tls_set(ca_certs=files.ca_file, certfile=files.cert_file, keyfile=files.key_file)
    except (ssl.SSLError, ValueError) as error:
        raise MqttUnreachable(
            f"cannot use the TLS files for MQTT broker {settings.address}: {error}. Fix: "
            "point `tls.ca_file`, `tls.cert_file` and `tls.key_file` at PEM files"
        ) from None


def _take(
    client: mqtt.Client,
    received: list[MqttMessage],
    arrived: threading.Condition,
    commit: Callable[[list[MqttMessage]], None],
    max_messages: int,
    max_seconds: float,
    idle_seconds: float,
    batch: int,
) -> int:
    deadline = time.monotonic() + max_seconds
    done = 0
    window = batch  # the broker's in-flight cap, once two pauses showed it to be smaller
    paused_at: int | None = None  # how many had arrived at the last pause, while learning
    while done < max_messages and time.monotonic() < deadline:
        with arrived:
            if not arrived.wait_for(lambda: len(received) > 0, timeout=idle_seconds):
                break  # nothing more arrived for idle_seconds
            seen = 0
            while seen < len(received) < window:
                seen = len(received)
                arrived.wait_for(lambda n=seen: len(received) > n, timeout=PAUSE_SECONDS)
            if len(received) < window:  # paused: the broker's cap, its backlog's end, or a stall
                if window != batch:
                    window = max(window, len(received))
                elif len(received) == paused_at:
                    # A broker's cap pauses at the same count every time; a busy machine's
                    # stall does not, and learning one shrank every later window (3,000
                    # messages in 261 commits instead of 7).
                    window = len(received)
                else:
                    paused_at = len(received)
            # Everything that arrived: more than `batch` when the broker lets more be in
            # flight, which makes fewer, larger commits.
            room = max_messages - done
            taken, received[:] = received[:room], received[room:]
        commit(taken)  # durable first ...
        for message in taken:  # ... then the broker may forget them
            client.ack(message.mid, 1)
        done += len(taken)
    return done
