"""Which Parquet reader feeds batchscore fastest: pyarrow tuned, or Polars handing Arrow over.

Usage::

    .venv/bin/python benchmarks/read_options.py                  # the bench data, plus a wide and a small set
    .venv/bin/python benchmarks/read_options.py --rounds 5 --only pa_row_group,polars_batches

Each option reads the same projected columns (``id`` and 32 float64 features)
of every file, batch by batch, holding one batch at a time as batchscore does,
in a fresh process per measurement; options run interleaved, round after
round, and the median of the rounds is printed: wall and CPU (all threads) per
row. Three data sets: the bench data (``make bench``'s cache), a small-file
set (many 20k-row files) and a wide one (300 columns, 33 read).

What it found (issue 15; CPU ns per row, medians of 3 rounds, 2-core dev box at load
average 3-12, so trust differences of 15% or more only):

    option                    bench (2 runs)   small (20k-row files)   wide (300 columns)
    pa_row_group (batchscore)    767 / 593          712                     770
    pa_row_group_1thread         792 / 698          698                     983
    pa_iter_batches              839 / 735          747                     987
    pa_row_group_mmap            687 / 582          656                     661
    polars_batches               665 / 653          671                     709

No option is faster on every set: Polars was 13% cheaper on the bench set in one run and
10% dearer in the other, 6-8% cheaper on small and wide files. And Polars does not verify
page checksums (a flipped byte in a checksummed page reads as a wrong value; pyarrow
raises), which batchscore promises, so the reader stays pyarrow's ``read_row_group``.
Memory-mapping saves up to 14% of CPU but counts every mapped page of the open file in
the process's RSS (peak 347 against 221 MB here, more with bigger files). About half of
the read stage is zstd's Huffman decoding of the float columns (perf), which every reader
pays alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
FEATURES = [f"f{i:02d}" for i in range(32)]
COLUMNS = ["id", *FEATURES]
BATCH = 65536


def _pa_row_group(
    path: str, *, threads: bool = True, crc: bool = True, memory_map: bool = False, pre_buffer: bool = False
) -> Iterator[Any]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, page_checksum_verification=crc, memory_map=memory_map, pre_buffer=pre_buffer)
    for group in range(pf.metadata.num_row_groups):
        yield from pf.read_row_group(group, columns=COLUMNS, use_threads=threads).to_batches(max_chunksize=BATCH)


def _pa_iter_batches(path: str) -> Iterator[Any]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, page_checksum_verification=True)
    yield from pf.iter_batches(batch_size=BATCH, columns=COLUMNS, use_threads=True)


def _pa_read_table(path: str) -> Iterator[Any]:
    import pyarrow.parquet as pq

    yield from pq.read_table(path, columns=COLUMNS, page_checksum_verification=True).to_batches(max_chunksize=BATCH)


def _polars_batches(path: str) -> Iterator[Any]:
    import polars as pl

    for frame in pl.scan_parquet(path).select(COLUMNS).collect_batches(chunk_size=BATCH):
        yield from frame.to_arrow().to_batches(max_chunksize=BATCH)


def _polars_whole(path: str) -> Iterator[Any]:
    import polars as pl

    yield from pl.scan_parquet(path).select(COLUMNS).collect().to_arrow().to_batches(max_chunksize=BATCH)


OPTIONS: dict[str, Callable[[str], Iterator[Any]]] = {
    "pa_row_group": _pa_row_group,
    "pa_row_group_1thread": lambda p: _pa_row_group(p, threads=False),
    "pa_row_group_nocrc": lambda p: _pa_row_group(p, crc=False),
    "pa_row_group_mmap": lambda p: _pa_row_group(p, memory_map=True),
    "pa_row_group_mmap_1thread": lambda p: _pa_row_group(p, memory_map=True, threads=False),
    "pa_row_group_prebuffer": lambda p: _pa_row_group(p, pre_buffer=True),
    "pa_iter_batches": _pa_iter_batches,
    "pa_read_table": _pa_read_table,
    "polars_batches": _polars_batches,
    "polars_whole": _polars_whole,
}


def child(option: str, files: list[str]) -> None:
    """Read every file with ``option``; print rows, wall and CPU seconds as one JSON line."""
    import resource

    import numpy as np
    import pyarrow  # noqa: F401  imported before the clock, as batchscore has it

    if option.startswith("polars"):
        import polars  # noqa: F401
    read = OPTIONS[option]
    rows = 0
    checksum = 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    for path in files:
        for batch in read(path):
            rows += batch.num_rows
            column = batch.column(1)  # touch the data the way assembly would: through its buffer
            checksum += float(np.frombuffer(column.buffers()[1], dtype=np.float64, count=1)[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "wall": wall, "cpu": cpu, "rss_mb": rss}))


def make_sets(root: Path, bench_files: list[str]) -> dict[str, list[str]]:
    """The bench data as it is, a small-file set (20k-row files) and a wide set (300 columns), made once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sets = {"bench": bench_files}
    small = root / "small"
    if not (small / "done").exists():
        small.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(bench_files[0]).slice(0, 400_000)
        for i in range(20):
            pq.write_table(table.slice(i * 20_000, 20_000), small / f"part-{i:03d}.parquet", compression="zstd")
        (small / "done").touch()
    sets["small"] = sorted(str(p) for p in small.glob("*.parquet"))
    wide = root / "wide"
    if not (wide / "done").exists():
        wide.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(5)
        for i in range(4):
            n = 100_000
            arrays = [pa.array(np.arange(i * n, (i + 1) * n, dtype=np.int64))]
            arrays += [pa.array(rng.standard_normal(n)) for _ in range(299)]
            names = ["id"] + [f"x{j:03d}" for j in range(267)] + FEATURES
            pq.write_table(
                pa.Table.from_arrays(arrays, names=names),
                wide / f"part-{i:03d}.parquet",
                compression="zstd",
                row_group_size=128 * 1024,
            )
        (wide / "done").touch()
    sets["wide"] = sorted(str(p) for p in wide.glob("*.parquet"))
    return sets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(OPTIONS))
    parser.add_argument("--sets", default="bench,small,wide")
    parser.add_argument("--cache-dir", type=Path, default=BENCH_DIR / ".cache")
    args = parser.parse_args(argv)
    bench = sorted(args.cache_dir.glob("rows5000000_files10_*/data/*.parquet"))
    if not bench:
        sys.exit("no bench data: run `make bench` once (or benchmarks/bench.py --keep-data)")
    sets = make_sets(args.cache_dir / "read_options", [str(p) for p in bench])
    options = [o for o in args.only.split(",") if o]
    for name in args.sets.split(","):
        files = sets[name]
        runs: dict[str, list[dict[str, float]]] = {o: [] for o in options}
        for _ in range(args.rounds):
            for option in options:
                cmd = [sys.executable, __file__, "--child", option, json.dumps(files)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[option].append(json.loads(out.strip().splitlines()[-1]))
        rows = runs[options[0]][0]["rows"]
        print(f"== {name}: {len(files)} files, {rows:,} rows; median of {args.rounds} interleaved rounds")
        print(f"{'option':<22} {'rows/s':>8} {'wall ns/row':>12} {'cpu ns/row':>11} {'peak MB':>8}")
        for option in options:
            wall = statistics.median(r["wall"] for r in runs[option])
            cpu = statistics.median(r["cpu"] for r in runs[option])
            rss = max(r["rss_mb"] for r in runs[option])
            rate = f"{rows / wall / 1e6:7.2f}M"
            print(f"{option:<22} {rate} {wall / rows * 1e9:12.0f} {cpu / rows * 1e9:11.0f} {rss:8.0f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
