"""kafka-python (pure Python) client for the tests and the demo.

    kafka_python_client.py produce|consume|admin|group --bootstrap HOST:PORT [options]
    kafka_python_client.py probe-produce|probe-consume --bootstrap HOST:PORT [options]

Prints one JSON summary line; exits non-zero on any mismatch, error or timeout, and with 3 after
a JSON line {"error": "authentication", ...} when SASL authentication fails (see payload.py for
the SASL options). The probe-* operations report what was answered (errors by kafka-python's
exception class and Kafka code) and exit 0 whatever it was: they are for tests of refusals.
"""

import logging
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (IllegalSaslStateError, KafkaError, SaslAuthenticationFailedError,
                          TopicAuthorizationFailedError, UnsupportedSaslMechanismError)
from kafka.net.sasl.oauth import AbstractTokenProvider

import payload

CLIENT = "kafka-python"
AUTH_ERRORS = (SaslAuthenticationFailedError, UnsupportedSaslMechanismError, IllegalSaslStateError,
               payload.AuthError)


class OidcTokenProvider(AbstractTokenProvider):
    """Client-credentials tokens from the token endpoint, each used until 80% of its lifetime
    has passed (as librdkafka and the Java client refresh them). kafka-python has no OIDC of
    its own; it asks this for a token at every (re)authentication."""

    def __init__(self, a):
        super().__init__()
        self.a = a
        self.lock = threading.Lock()
        self.value = None
        self.refresh_at = 0.0

    def token(self):
        with self.lock:
            now = time.time()
            if self.value is None or now >= self.refresh_at:
                self.value, expires_at = payload.fetch_oidc_token(self.a)
                self.refresh_at = now + 0.8 * max(0.0, expires_at - now)
            return self.value


class StaticTokenProvider(AbstractTokenProvider):
    """Exactly the token of --sasl-token-file, every time."""

    def __init__(self, token):
        super().__init__()
        self.value = token

    def token(self):
        return self.value


class AuthFailureHandler(logging.Handler):
    """kafka-python logs a failed authentication (with the exception as an argument) and then
    retries or waits for the operation's timeout: stop at the first one instead."""

    def __init__(self, a):
        super().__init__(logging.ERROR)
        self.a = a

    def emit(self, record):
        for arg in record.args if isinstance(record.args, tuple) else ():
            if isinstance(arg, AUTH_ERRORS):
                payload.auth_failed(self.a, CLIENT, repr(arg))


def sasl_kwargs(a):
    """Client keyword arguments for the SASL options; none without them."""
    mode = payload.sasl_mode(a)
    if mode is None:
        return {}
    kw = {"security_protocol": "SASL_PLAINTEXT"}
    if mode == "oidc":
        kw.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=OidcTokenProvider(a))
    elif mode == "token-file":
        token = payload.read_token_file(a.sasl_token_file)
        kw.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=StaticTokenProvider(token))
    else:
        user, password = a.sasl_plain.split(":", 1)
        kw.update(sasl_mechanism="PLAIN", sasl_plain_username=user, sasl_plain_password=password)
    return kw


def guarded(op):
    """Runs `op` with the SASL settings in `a.sasl` (one token provider shared by every client
    of the run) and every authentication failure turned into the authentication exit."""
    def run(a):
        a.sasl = sasl_kwargs(a)
        if a.sasl:
            logging.getLogger("kafka").addHandler(AuthFailureHandler(a))
        try:
            op(a)
        except AUTH_ERRORS as e:
            payload.auth_failed(a, CLIENT, repr(e))
    return run


def produce(a):
    p = KafkaProducer(
        bootstrap_servers=a.bootstrap,
        compression_type=None if a.codec == "none" else a.codec,
        linger_ms=20,
        acks=a.acks if a.acks == "all" else int(a.acks),
        # kafka-python 3 is idempotent by default, which needs acks=all.
        enable_idempotence=a.acks == "all",
        client_id="itest-kafka-python-producer",
        **a.sasl,
    )
    errors = []
    delivered = [0]

    def ok(_):
        delivered[0] += 1

    def failed(e):
        if len(errors) < 10:
            errors.append(repr(e))

    start = time.time()
    for i in range(a.count):
        f = p.send(
            a.topic,
            key=payload.key(a.seed, i),
            value=payload.value(a.seed, i, a.size),
            headers=payload.headers(a.seed, i, a.size),
        )
        f.add_callback(ok)
        f.add_errback(failed)
    p.flush(timeout=a.timeout)
    p.close(timeout=10)
    payload.finish(
        {
            "op": "produce",
            "client": "kafka-python",
            "topic": a.topic,
            "codec": a.codec,
            "produced": delivered[0],
            "errors": errors,
            "digest": payload.produced_digest(a.seed, a.count, a.size),
            "seconds": round(time.time() - start, 3),
        },
        not errors and delivered[0] == a.count,
    )


def partitions(c, topic, timeout):
    deadline = time.time() + timeout
    while True:
        parts = c.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.time() > deadline:
            raise SystemExit(f"topic {topic} has no partitions in metadata")
        time.sleep(0.2)


def poll_into(c, check, deadline):
    while not check.done() and time.time() < deadline:
        for records in c.poll(timeout_ms=500, max_records=1000).values():
            for r in records:
                check.add(r.key, r.value, r.headers, r.partition, r.offset)


def consume(a):
    c = KafkaConsumer(
        bootstrap_servers=a.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="itest-kafka-python-consumer",
        **a.sasl,
    )
    parts = partitions(c, a.topic, a.timeout)
    tps = [TopicPartition(a.topic, p) for p in parts]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    check = payload.Checker(a.seed, a.count, a.size)
    start = time.time()
    poll_into(c, check, start + a.timeout)
    for records in c.poll(timeout_ms=300).values():
        for r in records:
            check.add(r.key, r.value, r.headers, r.partition, r.offset)
    c.close()
    s = check.summary()
    s.update({"op": "consume", "client": "kafka-python", "topic": a.topic, "partitions": len(parts),
              "seconds": round(time.time() - start, 3)})
    payload.finish(s, check.ok())


def admin(a):
    ad = KafkaAdminClient(bootstrap_servers=a.bootstrap, client_id="itest-kafka-python-admin", **a.sasl)
    names = [t for t in a.create.split(",") if t]
    errors = []
    if names:
        try:
            ad.create_topics(
                [NewTopic(t, num_partitions=a.partitions, replication_factor=1) for t in names],
                timeout_ms=int(a.timeout * 1000),
            )
        except Exception as e:  # noqa: BLE001 - reported in the summary
            errors.append(repr(e))
    listed = sorted(ad.list_topics())
    counts = {}
    for d in ad.describe_topics([t for t in names if t in listed]):
        counts[d["name"]] = len(d["partitions"])
    ad.close()
    missing = [t for t in names if t not in listed]
    wrong = [t for t, n in counts.items() if n != a.partitions]
    payload.finish(
        {"op": "admin", "client": "kafka-python", "created": names, "listed": listed,
         "partitions": counts, "missing": missing, "errors": errors},
        not errors and not missing and not wrong,
    )


def group(a):
    c = KafkaConsumer(
        a.topic,
        bootstrap_servers=a.bootstrap,
        group_id=a.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="itest-kafka-python-group",
        **a.sasl,
    )
    check = payload.Checker(a.seed, a.count, a.size)
    start = time.time()
    poll_into(c, check, start + a.timeout)
    commit_error = None
    try:
        if check.done():
            c.commit()
    except Exception as e:  # noqa: BLE001 - reported in the summary
        commit_error = repr(e)
    c.close()
    v = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, enable_auto_commit=False,
                      client_id="itest-kafka-python-verify", **a.sasl)
    tps = [TopicPartition(a.topic, p) for p in partitions(v, a.topic, 30)]
    committed = {tp.partition: v.committed(tp) for tp in tps}
    v.close()
    # Each committed offset must be the one after the last record read from its partition
    # (a partition with no records has none committed).
    want = {tp.partition: check.next_offsets.get(tp.partition) for tp in tps}
    offsets_ok = committed == want
    s = check.summary()
    s.update({"op": "group", "client": "kafka-python", "topic": a.topic, "group": a.group,
              "commit_error": commit_error,
              "committed": {str(k): v for k, v in committed.items()},
              "expected_committed": {str(k): v for k, v in want.items()},
              "seconds": round(time.time() - start, 3)})
    payload.finish(s, check.ok() and commit_error is None and offsets_ok)


# ---------------------------------------------------------------------------------------------
# Probes (see payload.py): every outcome reported, exit 0


def entry(e):
    """An exception as a probe reports it: kafka-python's class name, the Kafka error code and
    Kafka's name for it (class attributes of kafka-python's broker errors)."""
    return payload.error_entry(type(e).__name__, getattr(e, "errno", None),
                               kafka_name=getattr(type(e), "message", None), detail=e)


def probe_produce(a):
    """--count records to each of --topics from one producer (kafka-python puts every partition
    bound for one broker into one Produce request; --sequential flushes after each topic)."""
    topics = payload.probe_topics(a)
    p = KafkaProducer(
        bootstrap_servers=a.bootstrap,
        compression_type=None if a.codec == "none" else a.codec,
        linger_ms=a.linger_ms,
        acks=a.acks if a.acks == "all" else int(a.acks),
        enable_idempotence=a.acks == "all",
        # A refusal is final: fail the records after --timeout, not the default 2 minutes.
        request_timeout_ms=min(30000, int(a.timeout * 1000)),
        delivery_timeout_ms=int(a.timeout * 1000) + a.linger_ms + 30000,
        client_id="itest-kafka-python-probe",
        **a.sasl,
    )
    tally = payload.Tally(topics)
    start = time.time()
    for topic in topics:
        for i in range(a.count):
            f = p.send(topic, key=payload.key(a.seed, i), value=payload.probe_value(a, i),
                       headers=payload.headers(a.seed, i, a.size))
            f.add_callback(lambda _md, t=topic: tally.ok(t))
            f.add_errback(lambda e, t=topic: tally.failed(t, entry(e)))
        if a.sequential:
            p.flush(timeout=a.timeout)
    p.flush(timeout=a.timeout)
    p.close(timeout=10)
    s = tally.summary()
    s.update({"op": "probe-produce", "client": CLIENT, "acks": a.acks, "codec": a.codec,
              "seconds": round(time.time() - start, 3)})
    payload.finish(s, True)


def probe_partitions(c, topic, timeout):
    """The topic's partitions, or the refusal metadata gives for it: kafka-python keeps topics
    it may not describe in its cluster metadata's unauthorized_topics, and raises nothing."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        parts = c.partitions_for_topic(topic)
        if parts:
            return sorted(parts), None
        if topic in c._cluster.unauthorized_topics:  # noqa: SLF001 - no public accessor
            e = TopicAuthorizationFailedError(topic)
            return None, entry(e)
        time.sleep(0.2)
    return None, payload.error_entry("no partitions in metadata", None)


def probe_consume(a):
    """Reads --topic (subscribing with --group, or --assign-ing every partition) until --count
    records (or, with --until-error, until an error), the first refusal or --timeout."""
    start = time.time()
    deadline = start + a.timeout
    common = dict(bootstrap_servers=a.bootstrap, enable_auto_commit=False,
                  auto_offset_reset="earliest", client_id="itest-kafka-python-probe", **a.sasl)
    progress = payload.Progress(a.progress_file)
    consumed, keys, errors, watermarks = 0, [], [], {}
    refusal, refusal_after = None, None
    if a.assign:
        c = KafkaConsumer(group_id=None, **common)
        parts, refusal = probe_partitions(c, a.topic, a.timeout)
        if parts is None:
            refusal_after = round(time.time() - start, 3)
        else:
            tps = [TopicPartition(a.topic, p) for p in parts]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            try:
                watermarks = {str(tp.partition): off for tp, off in c.end_offsets(tps).items()}
            except KafkaError as e:
                errors.append(entry(e))
    else:
        c = KafkaConsumer(a.topic, group_id=a.group, **common)
    progress.update(consumed, started=True)
    while refusal is None and time.time() < deadline:
        if consumed >= a.count and not a.until_error:
            break
        try:
            for records in c.poll(timeout_ms=500, max_records=500).values():
                for r in records:
                    consumed += 1
                    if len(keys) < 500:
                        keys.append((r.key or b"").decode(errors="replace"))
        except KafkaError as e:
            got = entry(e)
            if got not in errors and len(errors) < 20:
                errors.append(got)
            if getattr(e, "errno", None) in payload.REFUSALS or not getattr(e, "retriable", True):
                refusal, refusal_after = got, round(time.time() - start, 3)
            else:
                time.sleep(0.2)
        progress.update(consumed, started=True)
    refused_at = time.time() if refusal is not None else None
    c.close()
    progress.update(consumed, started=True, done=True)
    payload.finish({"op": "probe-consume", "client": CLIENT, "topic": a.topic, "group": a.group,
                    "consumed": consumed, "keys": keys, "high_watermarks": watermarks,
                    "refusal": refusal, "refusal_after": refusal_after, "refused_at": refused_at,
                    "errors": errors, "seconds": round(time.time() - start, 3)}, True)


def dump(a):
    """Reads --count records from the beginning (kafka-python checks CRCs by default) and
    prints them, as confluent_client.py dump does."""
    c = KafkaConsumer(
        bootstrap_servers=a.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        check_crcs=True,
        isolation_level="read_committed" if a.read_committed else "read_uncommitted",
        client_id="itest-kafka-python-dump",
        **a.sasl,
    )
    parts = partitions(c, a.topic, a.timeout)
    tps = [TopicPartition(a.topic, p) for p in parts]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out = []
    deadline = time.time() + a.timeout
    while len(out) < a.count and time.time() < deadline:
        for records in c.poll(timeout_ms=500, max_records=1000).values():
            for r in records:
                out.append(payload.dumped(r.partition, r.offset, r.key, r.value, r.headers))
    c.close()
    payload.finish({"op": "dump", "client": CLIENT, "topic": a.topic, "records": out},
                   len(out) >= a.count)


if __name__ == "__main__":
    payload.main({name: guarded(op) for name, op in
                  {"produce": produce, "consume": consume, "admin": admin, "group": group,
                   "probe-produce": probe_produce, "probe-consume": probe_consume,
                   "dump": dump}.items()})
