"""Describes every data file of a local Gale lake table with pyarrow, next to
its manifest, and prints one JSON document:

{"files": [{"path": "date=.../hour=.../part-....parquet", "rows": N,
            "row_groups": [N, ...], "codecs": ["ZSTD", ...],
            "min_event_time_ms": N, "max_event_time_ms": N,
            "columns": {"name": "arrow type", ...},
            "manifest": {...} or null}],
 "dataset_rows": N}

`dataset_rows` is what pyarrow.dataset reads from the directory with Hive
partitioning, so stray files (half-written uploads) would show up there.
"""
import json
import os
import sys

import pyarrow.dataset as ds
import pyarrow.parquet as pq

table = sys.argv[1].rstrip("/")
time_field = sys.argv[2] if len(sys.argv) > 2 else "event_time"
files = []
for root, _dirs, names in os.walk(table):
    if "/_" in root[len(table):]:
        continue  # checkpoints, compaction staging
    for name in sorted(names):
        if not name.endswith(".parquet"):
            continue
        path = os.path.join(root, name)
        meta = pq.ParquetFile(path).metadata
        data = pq.read_table(path)
        times = data[time_field].cast("int64").to_pylist() if time_field in data.column_names else []
        manifest_path = os.path.join(root, "_" + name[: -len(".parquet")] + ".json")
        manifest = None
        if os.path.exists(manifest_path):
            with open(manifest_path) as f:
                manifest = json.load(f)
        files.append({
            "path": os.path.relpath(path, table),
            "rows": meta.num_rows,
            "row_groups": [meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
            "codecs": sorted({meta.row_group(i).column(j).compression
                              for i in range(meta.num_row_groups)
                              for j in range(meta.num_columns)}),
            "min_event_time_ms": min(times) if times else None,
            "max_event_time_ms": max(times) if times else None,
            "columns": {f.name: str(f.type) for f in data.schema},
            "manifest": manifest,
        })
dataset = ds.dataset(table, format="parquet", partitioning="hive",
                     exclude_invalid_files=False)
print(json.dumps({"files": files, "dataset_rows": dataset.count_rows()}))
