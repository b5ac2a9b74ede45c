"""Deterministic records shared by the client scripts: the same (seed, index, size) always gives
the same key, value and headers, so a consumer can check every byte it reads against what the
producer sent, whichever library produced it."""

import argparse
import hashlib
import json
import sys

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


def main(ops):
    """Runs the operation named on the command line: `ops` maps names to functions."""
    parser = argparse.ArgumentParser()
    parser.add_argument("op", choices=sorted(ops))
    common_args(parser)
    a = parser.parse_args()
    ops[a.op](a)
