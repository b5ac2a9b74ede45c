"""What the broker itself stored: the records of a topic read from tansu's SQLite database.

    broker_storage.py DB TOPIC

Prints one JSON line {"records": [{partition, offset, key, value, headers}]} (text where it
decodes, base64 under `*_b64` otherwise), in partition and offset order. The masking tests use
it to see the broker's copy without any client or the interceptor in between.
"""

import json
import sqlite3
import sys

import payload


def main():
    db, topic = sys.argv[1], sys.argv[2]
    # Read-only, and tolerant of the broker writing at the same time.
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    rows = con.execute(
        "select tp.partition, r.offset_id, r.k, r.v, r.topition from record r "
        "join topition tp on tp.id = r.topition join topic t on t.id = tp.topic "
        "where t.name = ? order by tp.partition, r.offset_id", (topic,)).fetchall()
    out = []
    for partition, offset, key, value, topition in rows:
        headers = con.execute(
            "select k, v from header where topition = ? and offset_id = ?",
            (topition, offset)).fetchall()
        out.append(payload.dumped(partition, offset, key, value,
                                  [(bytes(k).decode(errors="replace"), v) for k, v in headers]))
    print(json.dumps({"op": "broker-storage", "topic": topic, "records": out, "ok": True}))


if __name__ == "__main__":
    main()
