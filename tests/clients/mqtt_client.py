"""MQTT client for the end-to-end tests: paho-mqtt 2.x, MQTT 3.1.1 or 5.

Prints one JSON summary as its last stdout line; exits 0 when the run went as asked (what
the broker or the interceptor answered is in the summary, for the test to judge), 1 on a
failure to run at all.

    mqtt_client.py publish   --topic T --count N [--qos Q] [--retain] [--payload TEXT]
    mqtt_client.py subscribe --filter F [--filter F2] [--count N] [--timeout S]
    mqtt_client.py connect   [--will-topic T --will-payload P] [--abort]

Common: --host --port --version 3|5 --client-id --username --password|--password-file
--clean/--no-clean --session-expiry S --linger S
"""

import argparse
import json
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes


def code_of(reason):
    """A reason code (paho's ReasonCode, or an int for 3.1.1) as an int."""
    if reason is None:
        return None
    value = getattr(reason, "value", reason)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Run:
    def __init__(self, args):
        self.args = args
        self.connected = threading.Event()
        self.connack = None
        self.disconnected = threading.Event()
        self.disconnect_reason = None
        self.acks = {}
        self.acked = threading.Condition()
        self.suback = None
        self.subscribed = threading.Event()
        self.messages = []
        self.got = threading.Condition()
        version = mqtt.MQTTv5 if args.version == "5" else mqtt.MQTTv311
        kwargs = {}
        if version == mqtt.MQTTv311:
            kwargs["clean_session"] = args.clean
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=args.client_id,
            protocol=version,
            **kwargs,
        )
        self.client.max_inflight_messages_set(args.inflight)
        self.client.max_queued_messages_set(0)
        password = args.password
        if args.password_file:
            with open(args.password_file) as f:
                password = f.read().strip()
        if args.username is not None or password is not None:
            self.client.username_pw_set(args.username or "", password)
        if args.will_topic:
            self.client.will_set(
                args.will_topic, args.will_payload, qos=args.qos, retain=args.retain
            )
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect
        self.client.on_publish = self.on_publish
        self.client.on_subscribe = self.on_subscribe
        self.client.on_message = self.on_message
        self.version = version

    def on_connect(self, client, userdata, flags, reason, properties):
        self.connack = code_of(reason)
        self.session_present = bool(getattr(flags, "session_present", False))
        self.connected.set()

    def on_disconnect(self, client, userdata, flags, reason, properties):
        self.disconnect_reason = code_of(reason)
        self.disconnected.set()
        self.connected.set()
        self.subscribed.set()
        with self.acked:
            self.acked.notify_all()
        with self.got:
            self.got.notify_all()

    def on_publish(self, client, userdata, mid, reason, properties):
        with self.acked:
            self.acks[mid] = code_of(reason)
            self.acked.notify_all()

    def on_subscribe(self, client, userdata, mid, reasons, properties):
        self.suback = [code_of(r) for r in reasons]
        self.subscribed.set()

    def on_message(self, client, userdata, msg):
        with self.got:
            self.messages.append(
                {
                    "topic": msg.topic,
                    "payload": msg.payload.decode("utf-8", "replace"),
                    "qos": msg.qos,
                    "retain": bool(msg.retain),
                    "dup": bool(msg.dup),
                    "mid": msg.mid,
                }
            )
            self.got.notify_all()

    def connect(self):
        properties = None
        if self.version == mqtt.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.args.session_expiry
        kwargs = {"keepalive": 30, "properties": properties}
        if self.version == mqtt.MQTTv5:
            kwargs["clean_start"] = self.args.clean
        try:
            self.client.connect(self.args.host, self.args.port, **kwargs)
        except (OSError, socket.error) as e:
            return {"connect_error": str(e)}
        self.client.loop_start()
        self.connected.wait(self.args.timeout)
        return None

    def summary(self, **more):
        out = {
            "connack": self.connack,
            "disconnected": self.disconnected.is_set(),
            "disconnect_reason": self.disconnect_reason,
        }
        out.update(more)
        return out


def publish(run):
    a = run.args
    payloads = [a.payload.replace("{i}", str(i)) for i in range(a.count)]
    mids = []
    started = time.monotonic()
    for p in payloads:
        if run.disconnected.is_set():
            break
        info = run.client.publish(a.topic, p, qos=a.qos, retain=a.retain)
        mids.append(info.mid)
    deadline = time.monotonic() + a.timeout
    if a.qos > 0:
        with run.acked:
            while (
                len([m for m in mids if m in run.acks]) < len(mids)
                and not run.disconnected.is_set()
                and time.monotonic() < deadline
            ):
                run.acked.wait(0.2)
    elapsed = time.monotonic() - started
    time.sleep(a.linger)
    acks = [run.acks.get(m) for m in mids]
    return {
        "sent": len(mids),
        "acks": acks,
        "acked": len([x for x in acks if x is not None]),
        "seconds": elapsed,
    }


def subscribe(run):
    a = run.args
    filters = [(f, a.qos) for f in a.filter]
    run.client.subscribe(filters)
    run.subscribed.wait(a.timeout)
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("subscribed\n")
    deadline = time.monotonic() + a.timeout
    with run.got:
        while (
            len(run.messages) < a.count
            and not run.disconnected.is_set()
            and time.monotonic() < deadline
        ):
            run.got.wait(0.2)
    time.sleep(a.linger)
    return {"suback": run.suback, "messages": list(run.messages)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["publish", "subscribe", "connect"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--version", choices=["3", "5"], default="5")
    p.add_argument("--client-id", default="")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--password-file")
    p.add_argument("--clean", dest="clean", action="store_true", default=True)
    p.add_argument("--no-clean", dest="clean", action="store_false")
    p.add_argument("--session-expiry", type=int, default=0)
    p.add_argument("--topic")
    p.add_argument("--filter", action="append", default=[])
    p.add_argument("--qos", type=int, default=0)
    p.add_argument("--retain", action="store_true")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--payload", default="message {i}")
    p.add_argument("--will-topic")
    p.add_argument("--will-payload", default="")
    p.add_argument("--abort", action="store_true", help="close the socket without DISCONNECT")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--linger", type=float, default=0.0)
    p.add_argument("--inflight", type=int, default=20)
    p.add_argument("--ready-file")
    a = p.parse_args()
    run = Run(a)
    failed = run.connect()
    if failed:
        print(json.dumps(failed))
        return 0
    if run.connack not in (0, None) or run.disconnected.is_set():
        run.client.loop_stop()
        print(json.dumps(run.summary()))
        return 0
    if a.op == "publish":
        result = publish(run)
    elif a.op == "subscribe":
        result = subscribe(run)
    else:
        time.sleep(a.linger)
        result = {"session_present": run.session_present}
    if a.abort:
        # Leave without DISCONNECT: the broker publishes the will.
        sock = run.client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        run.client.loop_stop()
    else:
        run.client.disconnect()
        run.client.loop_stop()
    print(json.dumps(run.summary(**result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
