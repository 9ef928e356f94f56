"""The optional row filter: a SQL boolean expression, evaluated per batch.

Polars parses the SQL (``pl.sql_expr``) and computes a boolean mask; the batch
itself stays in pyarrow, so kept columns keep their exact input types. As in a
SQL ``WHERE``, rows where the expression is null are dropped. Hive folder values
are typed (:mod:`batchscore.reader`), so ``month = 7`` compares numbers and a
date folder compares with ``ds = DATE '2026-11-20'``; the types are checked
against every file's schema before the first row is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from batchscore.errors import JobSpecError, SchemaMismatchError


class RowFilter:
    """``region = 'north' AND age >= 18``: which rows of a batch are scored."""

    def __init__(self, sql: str) -> None:
        import polars as pl

        self.sql = sql
        try:
            self._expr = pl.sql_expr(sql)
            self.columns: tuple[str, ...] = tuple(dict.fromkeys(self._expr.meta.root_names()))
        except Exception as exc:  # polars raises several types for bad SQL
            msg = f"filter {sql!r} is not a SQL expression polars reads: {_one_line(exc)}; write it as a WHERE clause"
            raise JobSpecError(msg) from exc
        if not self.columns:
            msg = f"filter {sql!r} names no column; write a condition on input columns, e.g. \"region = 'north'\""
            raise JobSpecError(msg)
        self._checked: list[pa.Schema] = []

    def check(self, schema: pa.Schema, *, source: str) -> None:
        """Fail before the first row if the filter names a column ``schema`` lacks, or compares the wrong types."""
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            msg = (
                f"filter {self.sql!r} names column(s) {', '.join(map(repr, missing))} that {source} does not have "
                f"(columns: {_short_list(schema.names)}); fix the filter"
            )
            raise SchemaMismatchError(msg)
        used = pa.schema([schema.field(c) for c in self.columns])
        if not any(used.equals(seen) for seen in self._checked):  # once per schema: many files share one
            empty = pa.RecordBatch.from_pylist([], schema=used)
            self.apply(empty, source=source, types=used)
            self._checked.append(used)

    def apply(self, batch: pa.RecordBatch, *, source: str, types: pa.Schema | None = None) -> pa.RecordBatch:
        """The rows of ``batch`` where the expression is true."""
        import polars as pl

        try:
            frame = pl.from_arrow(batch.select(list(self.columns)))
            assert isinstance(frame, pl.DataFrame)
            mask = frame.select(self._expr).to_series()
        except Exception as exc:
            shown = types or batch.select(list(self.columns)).schema
            kinds = ", ".join(f"{f.name} is {f.type}" for f in shown)
            msg = (
                f"filter {self.sql!r} cannot be evaluated on {source} ({kinds}): {_one_line(exc)}; "
                "compare numbers without quotes and dates as DATE '2026-11-20' (hive folder values are typed too)"
            )
            raise SchemaMismatchError(msg) from exc
        if mask.dtype != pl.Boolean:
            msg = f"filter {self.sql!r} gives {mask.dtype} values, not true/false; write a condition (=, <, AND, IN)"
            raise SchemaMismatchError(msg)
        return batch.filter(mask.to_arrow())


def _short_list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
