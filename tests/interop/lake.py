"""Reads a Gale lake table with standard tools and prints one JSON line:
{"rows": N, "distinct_event_ids": N, "sum_power_kw": X, "files": N, "partitions": [...]}

local: DuckDB over <dir>/**/*.parquet with Hive partitioning.
s3:    pyarrow.dataset over s3://bucket/prefix with Hive partitioning
       (endpoint and credentials from --endpoint and AWS_* variables).
"""
import argparse
import json

p = argparse.ArgumentParser()
p.add_argument("table", help="directory of the table, or s3://bucket/prefix")
p.add_argument("--endpoint", help="S3 endpoint URL (moto, MinIO)")
args = p.parse_args()

if args.table.startswith("s3://"):
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from pyarrow import fs

    s3 = fs.S3FileSystem(endpoint_override=args.endpoint, region="us-east-1", scheme="http" if args.endpoint and args.endpoint.startswith("http://") else "https")
    path = args.table[len("s3://"):]
    dataset = ds.dataset(path, filesystem=s3, format="parquet", partitioning="hive")
    table = dataset.to_table()
    files = len(dataset.files)
    rows = table.num_rows
    distinct = len(pc.unique(table["event_id"])) if rows else 0
    power = pc.sum(table["power_kw"]).as_py() if "power_kw" in table.column_names and rows else None
    parts = sorted({f.split("/date=")[1].rsplit("/", 1)[0] for f in dataset.files if "/date=" in f})
else:
    import duckdb

    glob = f"{args.table.rstrip('/')}/**/*.parquet"
    con = duckdb.connect()
    rows, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchone()
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()]
    power = None
    if "power_kw" in cols:
        power = con.execute(f"SELECT sum(power_kw) FROM read_parquet('{glob}', hive_partitioning = true)").fetchone()[0]
    files = con.execute(f"SELECT count(*) FROM glob('{glob}')").fetchone()[0]
    parts = [r[0] for r in con.execute(
        f"SELECT DISTINCT strftime(date::DATE, '%Y-%m-%d') || '/' || lpad(hour::VARCHAR, 2, '0') FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY 1"
    ).fetchall()]
print(json.dumps({"rows": rows, "distinct_event_ids": distinct, "sum_power_kw": power, "files": files, "partitions": parts}))
