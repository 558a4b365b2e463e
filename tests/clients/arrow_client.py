"""Reads what ducktrace writes with pyarrow, which shares no code with DuckDB: the Parquet files
of `ducktrace export` (hive-partitioned by day) and an Arrow IPC stream from /api/sql.

usage: arrow_client.py EXPORT_DIR API_URL
"""

import json
import sys
import urllib.request

import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

export_dir, api = sys.argv[1], sys.argv[2]
dataset = ds.dataset(export_dir, format="parquet", partitioning="hive")
table = dataset.to_table()
out = {
    "rows": table.num_rows,
    "days": sorted({str(day) for day in table.column("day").to_pylist()}),
    "trace_id": min(table.column("trace_id").to_pylist()),
    "truncated": pq.read_metadata(dataset.files[0]).metadata[b"ducktrace.truncated"].decode(),
}
request = urllib.request.Request(
    f"{api}/api/sql?format=arrow",
    data=b"SELECT span_name, duration_ns AS n FROM spans",
    headers={"content-type": "text/plain"},
)
with urllib.request.urlopen(request) as response:
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    answer = ipc.open_stream(response.read()).read_all()
out["arrow_rows"] = answer.num_rows
out["arrow_columns"] = answer.column_names
print(json.dumps(out))
