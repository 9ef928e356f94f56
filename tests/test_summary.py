"""The run summary against exact statistics of real data; merging, batching and serialization laws."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from datasketches import kll_doubles_sketch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batchscore.summary import (
    MAX_CATEGORIES,
    SKETCH_K,
    CategoricalStats,
    NumericStats,
    Sample,
    Summary,
    merge_all,
    sample_step,
)

DEMO = ROOT / "data" / "demo" / "ds=2026-11-20" / "part-0.parquet"
KLL_ERROR = kll_doubles_sketch.get_normalized_rank_error(SKETCH_K, False)
"""KLL's documented single-quantile rank error at SKETCH_K (99% confidence)."""
DECILES = [i / 10 for i in range(1, 10)]


def demo_table() -> pa.Table:
    return pq.read_table(DEMO)


def summarize(table: pa.Table, *, step: int = 1, batch_rows: int = 16384) -> Summary:
    summary = Summary.create({name: table.schema.field(name).type for name in table.column_names}, {}, step=step)
    for batch in table.to_batches(max_chunksize=batch_rows):
        summary.update(batch, [])
    return summary


def rank_bounds(values: np.ndarray, q: float) -> tuple[float, float]:
    """The ranks a value can have among ``values``: share strictly below it, and share at or below it."""
    ordered = np.sort(values)
    return np.searchsorted(ordered, q, "left") / len(ordered), np.searchsorted(ordered, q, "right") / len(ordered)


def assert_quantiles_within(stats: NumericStats, values: np.ndarray, tolerance: float) -> None:
    for rank, q in zip(DECILES, stats.quantiles(DECILES), strict=True):
        below, at_or_below = rank_bounds(values, q)
        assert below - tolerance <= rank <= at_or_below + tolerance, (rank, q, below, at_or_below)


def test_every_row_looked_at_gives_exact_statistics_and_quantiles_within_kll_error():
    table = demo_table()
    summary = summarize(table, step=1)
    assert summary.rows == table.num_rows
    for name in table.column_names:
        stats = summary.features[name]
        column = table[name]
        assert stats.rows == table.num_rows and stats.nulls == column.null_count
        if isinstance(stats, CategoricalStats):  # region, product, the bool flags: counts exactly
            counted = pc.value_counts(column.combine_chunks())
            expected = {
                str(v).lower() if isinstance(v, bool) else str(v): c
                for v, c in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
            }
            assert stats.counts == expected, name
            continue
        values = column.to_numpy().astype(np.float64)
        assert not stats.sampled and stats.nans == 0
        assert stats.min == values.min() and stats.max == values.max()
        assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
        assert_quantiles_within(stats, values, KLL_ERROR)


def test_a_sampled_summary_keeps_rows_and_nulls_exact_and_the_rest_within_the_samples_error():
    table = demo_table()
    step = sample_step(table.num_rows, values=4096)  # 49000 rows: every 12th
    assert step == 12
    summary = summarize(table, step=step, batch_rows=5000)
    looked = math.ceil((table.num_rows - step // 2) / step)
    sampling = 4 * math.sqrt(0.25 / looked)  # four standard errors of a rank read from `looked` rows
    for name in ("annual_income", "age", "loan_amount"):
        stats = summary.features[name]
        values = table[name].to_numpy().astype(np.float64)
        assert stats.rows == table.num_rows and stats.nulls == 0 and stats.sampled
        assert stats.seen == looked * step
        assert_quantiles_within(stats, values, KLL_ERROR + sampling)
        assert stats.mean == pytest.approx(values.mean(), abs=4 * values.std() / math.sqrt(looked))
        assert values.min() <= stats.min <= stats.max <= values.max()
    region = summary.features["region"]
    assert isinstance(region, CategoricalStats)
    exact = table["region"].to_pandas().value_counts(normalize=True)
    for value, share in region.shares().items():
        assert share == pytest.approx(exact[value], abs=sampling)


def test_nulls_nans_and_odd_types_are_counted():
    table = pa.table(
        {
            "x": pa.array([1.0, None, float("nan"), 4.0, None, float("nan"), 7.0]),
            "n": pa.array([1, 2, None, 4, 5, 6, 7], pa.int16()),
            "d": pa.array([Decimal("1.50"), None, Decimal("2.25"), None, None, None, Decimal("3.00")]),
            "s": pa.array(["a", None, "b", "a", None, "a", "c"]),
            "c": pa.array(["a", None, "b", "a", None, "a", "c"]).dictionary_encode(),
            "b": pa.array([True, False, None, True, True, None, True]),
            "v": pa.array([[1.0, 2.0], None, [3.0, 4.0], [5.0, 6.0], None, [7.0, 8.0], [9.0, 0.0]]),
        }
    )
    summary = summarize(table, batch_rows=3)
    x, n, d = summary.features["x"], summary.features["n"], summary.features["d"]
    assert (x.rows, x.nulls, x.nans, x.min, x.max, x.mean) == (7, 2, 2, 1.0, 7.0, 4.0)
    assert (n.nulls, n.min, n.max, n.mean) == (1, 1.0, 7.0, 25 / 6)
    assert (d.kind, d.nulls, d.min, d.max, d.mean) == ("numeric", 4, 1.5, 3.0, 2.25)
    assert summary.features["s"].counts == summary.features["c"].counts == {"a": 3, "b": 1, "c": 1}
    assert summary.features["s"].nulls == 2
    assert summary.features["b"].counts == {"true": 4, "false": 1}
    assert summary.features["v"].kind == "other" and summary.features["v"].nulls == 2
    assert summary.features["x"].missing_rate == pytest.approx(4 / 7)


def test_a_column_with_too_many_values_is_marked_high_cardinality():
    ids = pa.table({"id": pa.array([f"id-{i}" for i in range(MAX_CATEGORIES + 5)])})
    summary = summarize(ids, batch_rows=400)
    assert summary.features["id"].counts is None and summary.features["id"].rows == MAX_CATEGORIES + 5
    assert summary.features["id"].describe()["high_cardinality"]


def counts(summary: Summary) -> dict[str, dict]:
    """Everything but the sketch bytes (KLL compaction is random) and the float sum (order of additions)."""
    out = {}
    for name, stats in summary.features.items():
        data = stats.to_dict()
        data.pop("sketch", None)
        data["total"] = round(data.get("total", 0.0), 6)
        out[name] = data
    return out


def random_table(rows: int = 2000) -> pa.Table:
    rng = np.random.default_rng(7)
    x = np.where(rng.random(rows) < 0.1, np.nan, rng.normal(size=rows))
    return pa.table(
        {
            "x": pa.array(x, mask=rng.random(rows) < 0.05),
            "s": pa.array(rng.choice(["a", "b", "c"], rows), mask=rng.random(rows) < 0.05),
        }
    )


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=1999), max_size=6, unique=True),
    step=st.sampled_from([1, 3, 7]),
)
@example(cuts=[4], step=7)  # a batch whose only sampled row is null
def test_batch_boundaries_do_not_change_what_is_counted(cuts, step):
    table = random_table()
    whole = Summary.create({"x": pa.float64(), "s": pa.string()}, {}, step=step)
    whole.update(table.to_batches()[0], [])
    split = whole.empty()
    bounds = [0, *sorted(cuts), table.num_rows]
    for lo, hi in itertools.pairwise(bounds):
        split.update(table.slice(lo, hi - lo).to_batches()[0], [])
    assert counts(split) == counts(whole)
    assert split.features["x"].sketch.n == whole.features["x"].sketch.n


@settings(max_examples=15, deadline=None)
@given(order=st.permutations([0, 1, 2, 3]))
def test_part_summaries_merge_in_any_order_after_a_trip_through_bytes(order):
    """What a multi-worker engine relies on: each worker summarizes its parts and sends the bytes back."""
    table = random_table()
    parts = []
    for i in range(4):
        part = Summary.create({"x": pa.float64(), "s": pa.string()}, {}, step=3)
        part.update(table.slice(i * 500, 500).to_batches()[0], [])
        parts.append(part)
    in_order = merge_all(Summary.from_bytes(p.to_bytes()) for p in parts)
    shuffled = merge_all(Summary.from_bytes(parts[i].to_bytes()) for i in order)
    assert in_order is not None and shuffled is not None
    assert counts(in_order) == counts(shuffled)
    assert in_order.rows == shuffled.rows == table.num_rows
    assert in_order.features["x"].nulls == table["x"].null_count


def test_the_sample_continues_across_batches():
    sizes = [5, 1, 13, 2, 40, 3]
    step, start, taken = 7, 3, []
    offset = 0
    for rows in sizes:
        sample = Sample(rows, start, step)
        taken += [offset + i for i in range(sample.start, rows, step)]
        assert sample.size == len(range(sample.start, rows, step))
        start = sample.start + sample.size * step - rows
        offset += rows
    assert taken == list(range(3, sum(sizes), 7))


@pytest.mark.parametrize(
    ("rows", "step"),
    [
        (0, 1),  # nothing to score
        (16384, 1),  # up to SAMPLE_VALUES rows: every row
        (16385, 2),
        (5_000_000, 306),  # the benchmark: about 16k rows looked at
    ],
)
def test_sample_step(rows, step):
    assert sample_step(rows) == step


def test_describe_and_round_trip():
    summary = summarize(demo_table())
    again = Summary.from_dict(summary.to_dict())
    assert again.describe() == summary.describe()
    described = summary.describe()["features"]["age"]
    assert set(described["quantiles"]) == {"p1", "p5", "p25", "p50", "p75", "p95", "p99"}
    assert summary.describe()["features"]["region"]["top"]


@pytest.mark.parametrize(
    "array",
    [
        pa.array(np.random.default_rng(0).integers(0, 5, 1000)),  # class labels: counted with numpy
        pa.array(np.random.default_rng(1).integers(-3, 3, 77), pa.int32()).slice(5),  # at an offset
        pa.array([3, 1, 3, None, 1, 2]),  # with a null: pyarrow.compute, as before
        pa.array(["b", "a", "b"]),
        pa.array([True, False, True]),
    ],
)
def test_value_counts_agree_with_pyarrow_compute(array):
    from batchscore.summary import _value_counts

    found = pc.value_counts(array)
    assert _value_counts(array) == (found.field("values").to_pylist(), found.field("counts").to_pylist())


@pytest.mark.parametrize("step", [1, 3, 305])
@pytest.mark.parametrize("offset", [0, 7])
def test_sampled_integer_labels_are_counted_as_the_arrow_sample_counts_them(step, offset):
    """A classifier's int64 prediction is sampled from a numpy view (no Arrow ``take``, no pyarrow.compute):
    the same rows, the same counts, as taking the sample through Arrow and counting it there."""
    labels = pa.array(np.random.default_rng(step).integers(0, 4, 5000 + offset)).slice(offset)
    sample = Sample(len(labels), step // 2, step)
    stats = CategoricalStats(type="int64")
    stats.update(labels, sample)
    found = pc.value_counts(labels.take(pa.array(range(sample.start, len(labels), step))))
    values, counts_ = found.field("values").to_pylist(), found.field("counts").to_pylist()
    expected = {str(v): c * step for v, c in zip(values, counts_, strict=True)}
    assert stats.counts == expected and list(stats.counts) == list(expected)  # first-seen order too
