"""Prints the event ids of local Gale lake tables as JSON, one list per
table, in the order DuckDB reads them (duplicates kept):
{"<table dir>": ["id", ...], ...}"""
import json
import os
import sys

import duckdb

con = duckdb.connect()
out = {}
for table in sys.argv[1:]:
    glob = f"{table.rstrip('/')}/**/*.parquet"
    if not any(n.endswith(".parquet") for _, _, names in os.walk(table) for n in names):
        out[table] = []
        continue
    rows = con.execute(
        f"SELECT event_id FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()
    out[table] = [r[0] for r in rows]
print(json.dumps(out))
