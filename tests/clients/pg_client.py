"""Queries ducktrace over the PostgreSQL protocol with psycopg (extended protocol, bound
parameters, implicit transactions) and prints what it got as JSON.

usage: pg_client.py PORT
"""

import json
import sys

import psycopg

port = sys.argv[1]
out = {}
with psycopg.connect(f"host=127.0.0.1 port={port} user=ducktrace dbname=spans") as conn:
    rows = conn.execute(
        "SELECT span_name, duration_ns, start_time FROM spans WHERE span_name = %s AND duration_ns > %s",
        ("operation 1", 1000),
    ).fetchall()
    out["rows"] = [[name, duration, start.isoformat()] for name, duration, start in rows]
    count, ratio, flag = conn.execute("SELECT count(*), 0.5::DOUBLE, count(*) > 0 FROM spans").fetchone()
    out["types"] = [type(count).__name__, type(ratio).__name__, type(flag).__name__]
    try:
        conn.execute("DELETE FROM span_data")
    except psycopg.Error as error:
        out["refused"] = error.sqlstate
print(json.dumps(out))
