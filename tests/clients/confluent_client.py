"""confluent-kafka (librdkafka) client for the tests and the demo.

    confluent_client.py produce|consume|admin|group --bootstrap HOST:PORT [options]
    confluent_client.py probe-produce|probe-consume|probe-admin --bootstrap HOST:PORT [options]

Prints one JSON summary line; exits non-zero on any mismatch, error or timeout, and with 3 after
a JSON line {"error": "authentication", ...} when SASL authentication fails (see payload.py for
the SASL options). The probe-* operations report what was answered (errors by librdkafka's
name and Kafka code) and exit 0 whatever it was: they are for tests of refusals.
"""

import time
import uuid

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, ResourceType)

import payload

CLIENT = "confluent-kafka"

# How librdkafka reports a refused (or impossible) authentication; it would retry for ever, the
# scripts stop at the first one.
AUTH_CODES = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
              KafkaError.UNSUPPORTED_SASL_MECHANISM, KafkaError.ILLEGAL_SASL_STATE}


def with_sasl(a, conf):
    """`conf` plus what the SASL options ask for; `conf` itself without them."""
    mode = payload.sasl_mode(a)
    if mode is None:
        return conf
    conf = dict(conf, **{"security.protocol": "SASL_PLAINTEXT", "error_cb": lambda err: on_error(a, err)})
    if mode == "oidc":
        # librdkafka fetches (and refreshes) the tokens itself.
        conf.update({
            "sasl.mechanisms": "OAUTHBEARER",
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.token.endpoint.url": a.oidc_token_url,
            "sasl.oauthbearer.client.id": a.oidc_client_id,
            "sasl.oauthbearer.client.secret": a.oidc_client_secret,
        })
        if a.oidc_scope:
            conf["sasl.oauthbearer.scope"] = a.oidc_scope
    elif mode == "token-file":
        token = payload.read_token_file(a.sasl_token_file)
        principal = str(payload.jwt_claims(token).get("sub", "unknown"))

        def oauth_cb(_config):
            # librdkafka will not send a token it believes expired, and the server is what a
            # negative test is about: an expired token gets a lifetime in the future here.
            expiry = payload.token_expiry(token)
            return token, expiry if expiry > time.time() + 1 else time.time() + 300, principal

        conf.update({"sasl.mechanisms": "OAUTHBEARER", "oauth_cb": oauth_cb})
    else:
        user, password = a.sasl_plain.split(":", 1)
        conf.update({"sasl.mechanisms": "PLAIN", "sasl.username": user, "sasl.password": password})
    return conf


def on_error(a, err):
    """error_cb: librdkafka's errors are informational except an authentication failure."""
    if err.code() in AUTH_CODES:
        payload.auth_failed(a, CLIENT, f"{err.name()}: {err.str()}")


def auth_error(e):
    """The KafkaError of a KafkaException if it is about authentication, else None."""
    err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
    return err if err is not None and err.code() in AUTH_CODES else None


def guarded(op):
    """Runs `op`, turning an authentication error it raises into the authentication exit."""
    def run(a):
        try:
            op(a)
        except KafkaException as e:
            err = auth_error(e)
            if err is not None:
                on_error(a, err)
            raise
    return run


def produce(a):
    conf = with_sasl(a, {
        "bootstrap.servers": a.bootstrap,
        "compression.type": a.codec,
        "acks": a.acks,
        # Idempotence needs acks=all; the other settings test the plain producer.
        "enable.idempotence": a.acks == "all",
        "linger.ms": 20,
        "client.id": "itest-confluent-producer",
    })
    p = Producer(conf)
    errors = []
    delivered = [0]

    def on_delivery(err, msg):
        if err is not None:
            if len(errors) < 10:
                errors.append(str(err))
        else:
            delivered[0] += 1

    start = time.time()
    for i in range(a.count):
        while True:
            try:
                p.produce(
                    a.topic,
                    key=payload.key(a.seed, i),
                    value=payload.value(a.seed, i, a.size),
                    headers=payload.headers(a.seed, i, a.size),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
        if a.interval:
            p.flush(a.timeout)
            time.sleep(a.interval)
    left = p.flush(a.timeout)
    ok = left == 0 and not errors and delivered[0] == a.count
    payload.finish(
        {
            "op": "produce",
            "client": "confluent-kafka",
            "topic": a.topic,
            "codec": a.codec,
            "produced": delivered[0],
            "undelivered": left,
            "errors": errors,
            "digest": payload.produced_digest(a.seed, a.count, a.size),
            "seconds": round(time.time() - start, 3),
        },
        ok,
    )


def partitions(client, topic, timeout):
    """The topic's partitions once metadata has them. Also serves the client's callbacks while it
    waits (an authentication error is reported at once, not after `timeout`): call it before a
    consumer has an assignment."""
    deadline = time.time() + timeout
    while True:
        client.poll(0)
        try:
            md = client.list_topics(topic, timeout=min(1.0, max(0.5, deadline - time.time())))
        except KafkaException as e:
            if time.time() > deadline or auth_error(e):
                raise
            continue
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return sorted(t.partitions)
        if time.time() > deadline:
            raise SystemExit(f"topic {topic} has no partitions in metadata: {t and t.error}")
        time.sleep(0.2)


def consume(a):
    c = Consumer(with_sasl(a, {
        "bootstrap.servers": a.bootstrap,
        "group.id": "itest-unused-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "client.id": "itest-confluent-consumer",
    }))
    parts = partitions(c, a.topic, a.timeout)
    c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in parts])
    check = payload.Checker(a.seed, a.count, a.size)
    errors = []
    start = time.time()
    deadline = start + a.timeout
    while not check.done() and time.time() < deadline:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error():
                errors.append(str(m.error()))
                continue
            check.add(m.key(), m.value(), m.headers(), m.partition(), m.offset())
    # Anything beyond the expected records (duplicates) shows up in a last short poll.
    for m in c.consume(num_messages=1000, timeout=0.3):
        if not m.error():
            check.add(m.key(), m.value(), m.headers(), m.partition(), m.offset())
    c.close()
    s = check.summary()
    s.update({"op": "consume", "client": "confluent-kafka", "topic": a.topic, "errors": errors[:10],
              "partitions": len(parts), "seconds": round(time.time() - start, 3)})
    payload.finish(s, check.ok() and not errors)


def admin(a):
    ad = AdminClient(with_sasl(a, {"bootstrap.servers": a.bootstrap, "client.id": "itest-confluent-admin"}))
    if payload.sasl_mode(a):
        # Authenticate first, serving error_cb: the admin calls below would only time out.
        wait_metadata(ad, a.timeout)
    names = [t for t in a.create.split(",") if t]
    created, errors = [], []
    if names:
        futures = ad.create_topics(
            [NewTopic(t, num_partitions=a.partitions, replication_factor=1) for t in names],
            operation_timeout=a.timeout,
        )
        for name, f in futures.items():
            try:
                f.result(a.timeout)
                created.append(name)
            except KafkaException as e:
                errors.append(f"{name}: {e}")
    md = ad.list_topics(timeout=a.timeout)
    listed = sorted(md.topics)
    counts = {t: len(md.topics[t].partitions) for t in names if t in md.topics}
    missing = [t for t in names if t not in md.topics]
    wrong = [t for t, n in counts.items() if n != a.partitions]
    payload.finish(
        {"op": "admin", "client": "confluent-kafka", "created": created, "listed": listed,
         "partitions": counts, "missing": missing, "errors": errors,
         "brokers": [f"{b.host}:{b.port}" for b in md.brokers.values()]},
        not errors and not missing and not wrong,
    )


def wait_metadata(client, timeout):
    """Cluster metadata, polling for callbacks in between (see `partitions`)."""
    deadline = time.time() + timeout
    while True:
        client.poll(0.1)
        try:
            return client.list_topics(timeout=1.0)
        except KafkaException as e:
            if time.time() > deadline or auth_error(e):
                raise


def group(a):
    conf = with_sasl(a, {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "client.id": "itest-confluent-group",
    })
    c = Consumer(conf)
    c.subscribe([a.topic])
    check = payload.Checker(a.seed, a.count, a.size)
    errors = []
    start = time.time()
    first = None
    deadline = start + a.timeout
    while not check.done() and time.time() < deadline:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error():
                errors.append(str(m.error()))
                continue
            if first is None:
                first = time.time()
            check.add(m.key(), m.value(), m.headers(), m.partition(), m.offset())
    commit_error = None
    committed = {}
    try:
        if check.done():
            c.commit(asynchronous=False)
    except KafkaException as e:
        commit_error = str(e)
    c.close()
    # A fresh consumer of the same group reads the committed offsets back (OffsetFetch): each
    # must be the offset after the last record read from that partition.
    v = Consumer(dict(conf, **{"client.id": "itest-confluent-verify"}))
    parts = partitions(v, a.topic, 30)
    for tp in v.committed([TopicPartition(a.topic, p) for p in parts], timeout=30):
        committed[tp.partition] = tp.offset
    v.close()
    want = {p: check.next_offsets.get(p, -1001) for p in parts}
    offsets_ok = committed == want
    s = check.summary()
    s.update({"op": "group", "client": "confluent-kafka", "topic": a.topic, "group": a.group,
              "errors": errors[:10], "commit_error": commit_error,
              "committed": {str(k): v for k, v in committed.items()},
              "expected_committed": {str(k): v for k, v in want.items()},
              "first_record_after": round(first - start, 3) if first else None,
              "seconds": round(time.time() - start, 3)})
    payload.finish(s, check.ok() and commit_error is None and offsets_ok)


# ---------------------------------------------------------------------------------------------
# Probes (see payload.py): every outcome reported, exit 0


def entry(err):
    """A KafkaError as a probe reports it."""
    return payload.error_entry(err.name(), err.code(), detail=err.str())


def exception_entry(e):
    err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
    if err is not None:
        return entry(err)
    return payload.error_entry(type(e).__name__, None, detail=e)


def collecting_error_cb(a, conf, into):
    """`conf` with an error_cb that keeps librdkafka's client-level errors (still ending the run
    at an authentication failure)."""
    def cb(err):
        if len(into) < 20:
            into.append(entry(err))
        on_error(a, err)
    return dict(conf, error_cb=cb)


def probe_produce(a):
    """--count records to each of --topics (one producer, so one connection to the broker: with
    a long --linger-ms the topics share Produce requests; --sequential flushes after each)."""
    topics = payload.probe_topics(a)
    client_errors = []
    p = Producer(collecting_error_cb(a, with_sasl(a, {
        "bootstrap.servers": a.bootstrap,
        "compression.type": a.codec,
        "acks": a.acks,
        "enable.idempotence": a.acks == "all",
        "linger.ms": a.linger_ms,
        # A refusal is final: fail the records after --timeout, not the default 5 minutes.
        "message.timeout.ms": int(a.timeout * 1000),
        "client.id": "itest-confluent-probe",
    }), client_errors))
    tally = payload.Tally(topics)

    def on_delivery(err, msg):
        if err is None:
            tally.ok(msg.topic())
        else:
            tally.failed(msg.topic(), entry(err))

    start = time.time()
    for topic in topics:
        for i in range(a.count):
            while True:
                try:
                    p.produce(topic, key=payload.key(a.seed, i), value=payload.probe_value(a, i),
                              headers=payload.headers(a.seed, i, a.size), on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        if a.sequential:
            p.flush(a.timeout)
    left = p.flush(a.timeout)
    s = tally.summary()
    s.update({"op": "probe-produce", "client": CLIENT, "acks": a.acks, "codec": a.codec,
              "undelivered": left, "client_errors": client_errors,
              "seconds": round(time.time() - start, 3)})
    payload.finish(s, True)


def probe_partitions(c, topic, timeout):
    """The topic's partitions, or the error metadata gives for it (a refusal is not retried)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        c.poll(0)
        try:
            md = c.list_topics(topic, timeout=1.0)
        except KafkaException as e:
            last = exception_entry(e)
            continue
        t = md.topics.get(topic)
        if t is not None and t.error is not None:
            last = entry(t.error)
            if t.error.code() in payload.REFUSALS:
                return None, last
        elif t is not None and t.partitions:
            return sorted(t.partitions), None
        time.sleep(0.2)
    return None, last or payload.error_entry("no partitions in metadata", None)


def probe_consume(a):
    """Reads --topic (subscribing with --group, or --assign-ing every partition) until --count
    records (or, with --until-error, until an error), the first refusal or --timeout."""
    client_errors = []
    c = Consumer(collecting_error_cb(a, with_sasl(a, {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group or "itest-probe-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "client.id": "itest-confluent-probe",
    }), client_errors))
    progress = payload.Progress(a.progress_file)
    start = time.time()
    deadline = start + a.timeout
    consumed, keys, errors, watermarks = 0, [], [], {}
    refusal, refusal_after = None, None
    if a.assign:
        parts, refusal = probe_partitions(c, a.topic, a.timeout)
        if parts is not None:
            tps = [TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in parts]
            for tp in tps:
                try:
                    watermarks[str(tp.partition)] = c.get_watermark_offsets(tp, timeout=10)[1]
                except KafkaException as e:
                    errors.append(exception_entry(e))
            c.assign(tps)
        else:
            refusal_after = round(time.time() - start, 3)
    else:
        c.subscribe([a.topic])
    progress.update(consumed, started=True)
    while refusal is None and time.time() < deadline:
        if consumed >= a.count and not a.until_error:
            break
        for m in c.consume(num_messages=500, timeout=0.5):
            err = m.error()
            if err is None:
                consumed += 1
                if len(keys) < 500:
                    keys.append((m.key() or b"").decode(errors="replace"))
                continue
            e = entry(err)
            if e not in errors and len(errors) < 20:
                errors.append(e)
            if refusal is None and (err.code() in payload.REFUSALS or err.fatal()):
                refusal, refusal_after = e, round(time.time() - start, 3)
        for e in client_errors:
            if refusal is None and e["code"] in payload.REFUSALS:
                refusal, refusal_after = e, round(time.time() - start, 3)
        progress.update(consumed, started=True)
    refused_at = time.time() if refusal is not None else None
    c.close()
    progress.update(consumed, started=True, done=True)
    payload.finish({"op": "probe-consume", "client": CLIENT, "topic": a.topic, "group": a.group,
                    "consumed": consumed, "keys": keys, "high_watermarks": watermarks,
                    "refusal": refusal, "refusal_after": refusal_after, "refused_at": refused_at,
                    "errors": errors, "client_errors": client_errors,
                    "seconds": round(time.time() - start, 3)}, True)


def probe_admin(a):
    """Runs --actions on --topic in order, each outcome reported; then whether the topic exists
    and how many partitions it has."""
    client_errors = []
    ad = AdminClient(collecting_error_cb(a, with_sasl(a, {
        "bootstrap.servers": a.bootstrap, "client.id": "itest-confluent-probe-admin"}), client_errors))
    wait_metadata(ad, a.timeout)

    def partition_count():
        t = ad.list_topics(a.topic, timeout=a.timeout).topics.get(a.topic)
        return len(t.partitions) if t is not None and t.error is None else None

    results = []
    for action in [x for x in a.actions.split(",") if x]:
        outcome = {"action": action, "error": None}
        try:
            if action == "delete-topic":
                f = ad.delete_topics([a.topic], operation_timeout=a.timeout)[a.topic]
            elif action == "create-partitions":
                n = partition_count()
                if n is None:
                    raise RuntimeError(f"{a.topic} is not in metadata")
                f = ad.create_partitions([NewPartitions(a.topic, n + 1)],
                                         operation_timeout=a.timeout)[a.topic]
            elif action == "alter-config":
                res = ConfigResource(ResourceType.TOPIC, a.topic, incremental_configs=[
                    ConfigEntry("retention.ms", "3600000",
                                incremental_operation=AlterConfigOpType.SET)])
                f = ad.incremental_alter_configs([res])[res]
            elif action == "describe-config":
                res = ConfigResource(ResourceType.TOPIC, a.topic)
                f = ad.describe_configs([res])[res]
            else:
                raise SystemExit(f"unknown probe-admin action {action}")
            f.result(a.timeout)
        except KafkaException as e:
            outcome["error"] = exception_entry(e)
        except Exception as e:  # noqa: BLE001 - the probe reports whatever happened
            outcome["error"] = payload.error_entry(type(e).__name__, None, detail=e)
        results.append(outcome)
    md = ad.list_topics(timeout=a.timeout)
    t = md.topics.get(a.topic)
    payload.finish({"op": "probe-admin", "client": CLIENT, "topic": a.topic, "results": results,
                    "exists": t is not None and t.error is None,
                    "partitions": len(t.partitions) if t is not None else None,
                    "client_errors": client_errors}, True)


def produce_file(a):
    """Produces --records in order, idempotent (acks=all), in one committed transaction with
    --transactional-id; reports every delivery error by name and exits 0 whatever happened
    (`complete` says whether every record was delivered)."""
    conf = {
        "bootstrap.servers": a.bootstrap,
        "compression.type": a.codec,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 50,
        "message.timeout.ms": a.message_timeout_ms,
        "client.id": "itest-confluent-producer",
    }
    if a.transactional_id:
        conf["transactional.id"] = a.transactional_id
    p = Producer(with_sasl(a, conf))
    records = payload.read_records(a.records)
    errors, delivered = [], [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append({"name": err.name(), "code": err.code(), "str": err.str()})
        else:
            delivered[0] += 1

    start = time.time()
    if a.transactional_id:
        p.init_transactions(a.timeout)
        p.begin_transaction()
    for key, value, headers in records:
        p.produce(a.topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        p.poll(0)
    txn_error = None
    if a.transactional_id:
        try:
            p.commit_transaction(a.timeout)
        except KafkaException as e:
            txn_error = str(e)
    left = p.flush(a.timeout)
    complete = left == 0 and not errors and delivered[0] == len(records) and txn_error is None
    payload.finish({"op": "produce-file", "client": CLIENT, "topic": a.topic, "codec": a.codec,
                    "produced": delivered[0], "undelivered": left, "errors": errors[:10],
                    "transactional": bool(a.transactional_id), "transaction_error": txn_error,
                    "complete": complete, "seconds": round(time.time() - start, 3)}, True)


def dump(a):
    """Reads --count records of every partition from the beginning (CRCs checked) and prints
    them: {"records": [{partition, offset, key, value, headers}]}."""
    c = Consumer(with_sasl(a, {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group or "itest-unused-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "check.crcs": True,
        "isolation.level": "read_committed" if a.read_committed else "read_uncommitted",
        "client.id": "itest-confluent-dump",
    }))
    parts = partitions(c, a.topic, a.timeout)
    c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in parts])
    out, errors = [], []
    deadline = time.time() + a.timeout
    while len(out) < a.count and time.time() < deadline:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    errors.append({"name": m.error().name(), "code": m.error().code()})
                continue
            out.append(payload.dumped(m.partition(), m.offset(), m.key(), m.value(), m.headers()))
    c.close()
    payload.finish({"op": "dump", "client": CLIENT, "topic": a.topic, "records": out,
                    "errors": errors[:10]}, len(out) >= a.count and not errors)


def produce_acks(a):
    """Produces --count records (acks=all, no retries, one every --interval seconds) and appends
    "partition offset" for each acknowledged one to --progress-file the moment librdkafka
    reports it; exits 0 whatever happened: a daemon killed under it is what the test is about."""
    conf = with_sasl(a, {
        "bootstrap.servers": a.bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "retries": 0,
        "linger.ms": 5,
        "message.timeout.ms": a.message_timeout_ms,
        "client.id": "itest-confluent-acks",
    })
    p = Producer(conf)
    errors, acked = [], [0]
    with open(a.progress_file, "a", buffering=1) as out:
        def on_delivery(err, msg):
            if err is None:
                out.write(f"{msg.partition()} {msg.offset()}\n")
                out.flush()
                acked[0] += 1
            elif len(errors) < 10:
                errors.append(err.name())

        start = time.time()
        for i in range(a.count):
            try:
                p.produce(a.topic, key=payload.key(a.seed, i),
                          value=payload.value(a.seed, i, a.size), on_delivery=on_delivery)
            except BufferError:
                p.poll(0.5)
            p.poll(0)
            if a.interval:
                time.sleep(a.interval)
        left = p.flush(a.timeout)
    payload.finish({"op": "produce-acks", "client": CLIENT, "topic": a.topic, "acked": acked[0],
                    "undelivered": left, "errors": errors,
                    "seconds": round(time.time() - start, 3)}, True)


if __name__ == "__main__":
    payload.main({name: guarded(op) for name, op in
                  {"produce": produce, "consume": consume, "admin": admin, "group": group,
                   "probe-produce": probe_produce, "probe-consume": probe_consume,
                   "probe-admin": probe_admin, "produce-file": produce_file,
                   "dump": dump, "produce-acks": produce_acks}.items()})
