"""Footer scan on an object store far away: N small Parquet files on moto's S3 server behind a proxy that adds
a fixed latency to every request, scanned one file at a time and concurrently (batchscore's default).

    .venv/bin/python benchmarks/footer_scan.py            # 500 files, 20 ms a request
    .venv/bin/python benchmarks/footer_scan.py --files 100 --latency 0.05

Prints the wall time, the requests per file and the most requests in flight at once, for each way.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from servers import CREDENTIALS, LatencyProxy, free_port, moto_command, new_bucket, serve  # noqa: E402

from batchscore import reader  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every request")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    port = free_port()
    command = moto_command(port)
    if isinstance(command, str):
        sys.exit(command)
    with serve("moto", command, port) as server:
        if isinstance(server, str):
            sys.exit(server)
        bucket = new_bucket(server)
        fs = pa.fs.S3FileSystem(endpoint_override=server.host_port, scheme="http", region="us-east-1")
        for i in range(args.files):
            sink = io.BytesIO()
            pq.write_table(pa.table({"id": [i, i + 1, i + 2], "x": [0.5, None, 1.5]}), sink)
            with fs.open_output_stream(f"{bucket}/events/ds=2026-11-20/part-{i:04d}.parquet") as out:
                out.write(sink.getvalue())
        proxy = LatencyProxy(server.endpoint, latency=args.latency)
        options = {"endpoint_override": proxy.host_port, "scheme": "http"}
        uri = f"s3://{bucket}/events"
        print(f"{args.files} footers on S3 (moto) with {args.latency * 1000:.0f} ms added to every request")
        for label, serial in (("one at a time", True), (f"concurrent ({reader.SCAN_THREADS} threads)", False)):
            proxy.reset()
            started = time.perf_counter()
            found = reader.find_inputs([uri], options=options)
            listed = time.perf_counter()
            files = [reader.scan([f])[0] for f in found] if serial else reader.scan(found, options=options)
            done = time.perf_counter()
            assert len(files) == args.files and sum(f.num_rows for f in files) == 3 * args.files
            requests = sum(proxy.requests.values())
            print(
                f"  {label:<24} listing {listed - started:5.2f} s, footers {done - listed:6.2f} s; "
                f"{requests} requests ({requests / args.files:.2f} a file), at most {proxy.peak} at once"
            )
        proxy.close()


if __name__ == "__main__":
    main()
