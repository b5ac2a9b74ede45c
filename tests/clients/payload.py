"""Deterministic records shared by the client scripts: the same (seed, index, size) always gives
the same key, value and headers, so a consumer can check every byte it reads against what the
producer sent, whichever library produced it."""

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

FILLER = b"the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. "


def key(seed, i):
    return f"{seed}:{i:08d}".encode()


def value(seed, i, size):
    """Compressible (so every codec really compresses) but different per record."""
    k = key(seed, i)
    head = k + b" " + hashlib.sha256(k).hexdigest().encode() + b" "
    body = head + FILLER * (size // len(FILLER) + 1)
    return body[:size]


def headers(seed, i, size):
    return [("i", str(i).encode()), ("sha256", sha(value(seed, i, size)).encode())]


def sha(data):
    return hashlib.sha256(data if data is not None else b"").hexdigest()


def index_of(seed, k):
    """The record index from a key of this seed, or None."""
    try:
        s, i = k.decode().rsplit(":", 1)
        return int(i) if s == str(seed) else None
    except Exception:
        return None


class Checker:
    """Checks consumed records against the expected ones: every key, value and header byte."""

    def __init__(self, seed, count, size):
        self.seed, self.count, self.size = seed, count, size
        self.seen = {}
        self.duplicates = 0
        self.mismatches = []
        # partition -> next offset after the last record read (what a commit should store)
        self.next_offsets = {}

    def add(self, k, v, hdrs, partition=None, offset=None):
        if partition is not None and offset is not None:
            self.next_offsets[partition] = max(self.next_offsets.get(partition, 0), offset + 1)
        i = index_of(self.seed, k) if k is not None else None
        if i is None or not 0 <= i < self.count:
            self.mismatch(f"unexpected key {k!r}")
            return
        if i in self.seen:
            self.duplicates += 1
            return
        want = value(self.seed, i, self.size)
        if sha(v) != sha(want):
            self.mismatch(f"record {i}: value sha256 {sha(v)} != {sha(want)} (len {len(v or b'')} vs {len(want)})")
        got_headers = [(h[0], bytes(h[1]) if h[1] is not None else None) for h in (hdrs or [])]
        if got_headers != headers(self.seed, i, self.size):
            self.mismatch(f"record {i}: headers {got_headers!r}")
        self.seen[i] = sha(v)

    def mismatch(self, what):
        if len(self.mismatches) < 20:
            self.mismatches.append(what)
        else:
            self.mismatches[-1] = "... more mismatches"

    def done(self):
        return len(self.seen) >= self.count

    def digest(self):
        h = hashlib.sha256()
        for i in sorted(self.seen):
            h.update(self.seen[i].encode())
        return h.hexdigest()

    def ok(self):
        return self.done() and not self.mismatches and self.duplicates == 0

    def summary(self):
        return {
            "consumed": len(self.seen),
            "expected": self.count,
            "duplicates": self.duplicates,
            "mismatches": self.mismatches,
            "digest": self.digest(),
        }


def produced_digest(seed, count, size):
    h = hashlib.sha256()
    for i in range(count):
        h.update(sha(value(seed, i, size)).encode())
    return h.hexdigest()


def finish(summary, ok):
    summary["ok"] = bool(ok)
    print(json.dumps(summary, sort_keys=True), flush=True)
    sys.exit(0 if ok else 1)


# ---------------------------------------------------------------------------------------------
# SASL: OIDC client credentials, a static token, or PLAIN

AUTH_EXIT = 3


class AuthError(Exception):
    """The token endpoint refused the client or could not be reached."""


def sasl_mode(a):
    """"oidc", "token-file", "plain", or None (no SASL: PLAINTEXT, as before)."""
    if a.oidc_token_url:
        return "oidc"
    if a.sasl_token_file:
        return "token-file"
    if a.sasl_plain:
        return "plain"
    return None


def auth_failed(a, client, detail):
    """Reports an authentication failure as one JSON line and exits with AUTH_EXIT at once.

    os._exit: this runs inside library callbacks and background threads, where SystemExit would
    be swallowed or only surface after the operation's own timeout."""
    print(json.dumps({"op": a.op, "client": client, "error": "authentication",
                      "detail": str(detail), "ok": False}, sort_keys=True), flush=True)
    os._exit(AUTH_EXIT)


def read_token_file(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def jwt_claims(token):
    """The payload of a JWT (signature not checked), or {} if it is not one."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return claims if isinstance(claims, dict) else {}
    except (IndexError, ValueError):
        return {}


def token_expiry(token, default_ttl=300):
    """When a token expires (seconds since the epoch): its `exp`, else now + default_ttl."""
    exp = jwt_claims(token).get("exp")
    return float(exp) if isinstance(exp, (int, float)) else time.time() + default_ttl


def fetch_oidc_token(a):
    """Client-credentials grant with HTTP basic auth (as librdkafka does): (token, expires_at)."""
    form = {"grant_type": "client_credentials"}
    if a.oidc_scope:
        form["scope"] = a.oidc_scope
    # RFC 6749 2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
    pair = ":".join(urllib.parse.quote(v, safe="") for v in (a.oidc_client_id, a.oidc_client_secret))
    req = urllib.request.Request(
        a.oidc_token_url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
                 "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        raise AuthError(f"token endpoint answered {e.code}: {e.read().decode(errors='replace')}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise AuthError(f"token endpoint {a.oidc_token_url}: {e}") from e
    token = body.get("access_token")
    if not token:
        raise AuthError(f"no access_token in {body}")
    expires_at = time.time() + float(body["expires_in"]) if "expires_in" in body else token_expiry(token)
    return token, expires_at


def common_args(parser):
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", default="s")
    parser.add_argument("--codec", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    parser.add_argument("--acks", default="all", choices=["0", "1", "all"],
                        help="produce: 0 means the broker sends no response at all")
    parser.add_argument("--group")
    parser.add_argument("--create", default="", help="admin: comma-separated topics to create")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    files = parser.add_argument_group("records from and to files (produce-file, dump)")
    files.add_argument("--records", metavar="PATH",
                       help="produce-file: JSON lines {key, value, headers} (text, null allowed)")
    files.add_argument("--transactional-id", help="produce-file: one transaction, committed")
    files.add_argument("--read-committed", action="store_true", help="dump: isolation read_committed")
    files.add_argument("--message-timeout-ms", type=int, default=30000,
                       help="produce-file: how long librdkafka retries a record")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="produce: seconds between records (a long-lived connection)")
    probe = parser.add_argument_group(
        "probes", "the probe-* operations report what the broker (or the interceptor) answered "
        "instead of checking records: they exit 0 with a summary whatever the outcome, non-zero "
        "only when the probe itself could not run")
    probe.add_argument("--topics", default="",
                       help="probe-produce: comma-separated topics (default: --topic), --count records each")
    probe.add_argument("--linger-ms", type=int, default=20,
                       help="probe-produce: linger, high enough to put several topics in one request")
    probe.add_argument("--sequential", action="store_true",
                       help="probe-produce: flush after each topic (one topic per request, in order)")
    probe.add_argument("--inject", default="",
                       help="probe-produce: text written into the middle of every value")
    probe.add_argument("--until-error", action="store_true",
                       help="probe-consume: keep consuming after --count records, until an error "
                       "or --timeout")
    probe.add_argument("--progress-file", metavar="PATH",
                       help="probe-consume: rewritten with {\"consumed\": n} as records arrive")
    probe.add_argument("--assign", action="store_true",
                       help="probe-consume: assign all partitions by hand instead of subscribing "
                       "(--group is then only the consumer's group.id, never joined)")
    probe.add_argument("--actions", default="",
                       help="probe-admin: comma-separated delete-topic, create-partitions, "
                       "alter-config, describe-config, run in order on --topic")
    sasl = parser.add_argument_group(
        "SASL", "at most one of OIDC, a token file or PLAIN (default: none, PLAINTEXT). The first "
        "authentication failure ends the run: a JSON line with error=authentication, exit code "
        f"{AUTH_EXIT}.")
    sasl.add_argument("--oidc-token-url", help="OAUTHBEARER with tokens from this token endpoint "
                      "(client-credentials grant, HTTP basic auth)")
    sasl.add_argument("--oidc-client-id")
    sasl.add_argument("--oidc-client-secret")
    sasl.add_argument("--oidc-scope")
    sasl.add_argument("--sasl-token-file", metavar="PATH",
                      help="OAUTHBEARER sending exactly the token in this file")
    sasl.add_argument("--sasl-plain", metavar="USER:PASS", help="SASL PLAIN")


def check_sasl_args(parser, a):
    given = {"--oidc-token-url": a.oidc_token_url, "--sasl-token-file": a.sasl_token_file,
             "--sasl-plain": a.sasl_plain}
    chosen = [option for option, value in given.items() if value]
    if len(chosen) > 1:
        parser.error(f"{' and '.join(chosen)} exclude each other")
    if a.oidc_token_url and not (a.oidc_client_id and a.oidc_client_secret):
        parser.error("--oidc-token-url needs --oidc-client-id and --oidc-client-secret")
    if not a.oidc_token_url and (a.oidc_client_id or a.oidc_client_secret or a.oidc_scope):
        parser.error("--oidc-client-id/--oidc-client-secret/--oidc-scope need --oidc-token-url")
    if a.sasl_plain and ":" not in a.sasl_plain:
        parser.error("--sasl-plain takes USER:PASS")


def main(ops):
    """Runs the operation named on the command line: `ops` maps names to functions."""
    parser = argparse.ArgumentParser()
    parser.add_argument("op", choices=sorted(ops))
    common_args(parser)
    a = parser.parse_args()
    check_sasl_args(parser, a)
    ops[a.op](a)


# ---------------------------------------------------------------------------------------------
# Probes: what the policy tests need to see (every outcome reported, none judged)

# The errors a refusal by policy gives: a probe consumer stops at the first one.
REFUSALS = {29: "TOPIC_AUTHORIZATION_FAILED", 30: "GROUP_AUTHORIZATION_FAILED",
            31: "CLUSTER_AUTHORIZATION_FAILED", 44: "POLICY_VIOLATION",
            53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"}


def probe_topics(a):
    topics = [t for t in a.topics.split(",") if t] or ([a.topic] if a.topic else [])
    if not topics:
        raise SystemExit("probe-produce needs --topic or --topics")
    return topics


def probe_value(a, i):
    """The record's usual value, with --inject written into its middle (same size unless the
    text is longer than the value)."""
    v = value(a.seed, i, a.size)
    if not a.inject:
        return v
    text = a.inject.encode()
    mid = max(0, (len(v) - len(text)) // 2)
    return v[:mid] + text + v[mid + len(text):]


def error_entry(name, code, kafka_name=None, detail=None):
    """One error as a probe reports it: the client library's own name for it, the Kafka error
    code, and Kafka's name for that code when the library's name is not it."""
    e = {"name": name, "code": code}
    if kafka_name is not None:
        e["kafka_name"] = kafka_name
    if detail is not None:
        e["detail"] = str(detail)[:300]
    return e


class Tally:
    """Per-topic outcomes of a probe producer: records delivered, errors by name."""

    def __init__(self, topics):
        self.topics = {t: {"delivered": 0, "failed": 0, "errors": {}} for t in topics}
        self.codes = {}

    def ok(self, topic):
        self.topics[topic]["delivered"] += 1

    def failed(self, topic, entry):
        t = self.topics[topic]
        t["failed"] += 1
        t["errors"][entry["name"]] = t["errors"].get(entry["name"], 0) + 1
        self.codes[entry["name"]] = entry["code"]

    def summary(self):
        return {"topics": self.topics, "codes": self.codes}


class Progress:
    """What a probe consumer has read so far, in --progress-file (replaced atomically, so a
    reader never sees half a line)."""

    def __init__(self, path):
        self.path = path
        self.last = None

    def update(self, consumed, **extra):
        if not self.path:
            return
        state = dict(extra, consumed=consumed)
        if state == self.last:
            return
        self.last = state
        tmp = self.path + ".part"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(state, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------
# Records from a file, records to stdout: the masking tests compare exact values


def read_records(path):
    """[(key, value, headers)] from JSON lines; text values are UTF-8 encoded, null stays None."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            enc = (lambda v: None if v is None else v.encode())
            headers = [(k, enc(v)) for k, v in (r.get("headers") or {}).items()]
            out.append((enc(r.get("key")), enc(r.get("value")), headers))
    return out


def dumped(partition, offset, key, value, headers):
    """One consumed record as JSON: text where it decodes, else base64 under `*_b64`."""
    def text(field, v, into):
        if v is None:
            into[field] = None
            return
        try:
            into[field] = v.decode()
        except UnicodeDecodeError:
            into[field + "_b64"] = base64.b64encode(v).decode()
    r = {"partition": partition, "offset": offset}
    text("key", key, r)
    text("value", value, r)
    hs = {}
    for k, v in headers or []:
        hs[k] = None if v is None else v.decode(errors="replace")
    r["headers"] = hs
    return r
