"""One RecordBatch in, prediction columns out: the per-batch work the CLI and the Python API share.

Each model input is assembled from its columns (:mod:`batchscore.features`),
the model runs (in chunks of exactly its batch size when it fixes one, the last
chunk padded with copies of its last row and the padded rows' outputs dropped;
on the CPU in calls of at most ``CPU_CALL_ROWS`` rows otherwise),
and the outputs are decoded into Arrow columns (:func:`batchscore.outputs.decode_outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from batchscore.errors import ModelError
from batchscore.features import FeatureAssembler, VectorAssembler
from batchscore.mapping import FeaturePlan, InputBinding
from batchscore.model import Model
from batchscore.outputs import decode_outputs
from batchscore.spec import OnNull

CPU_CALL_ROWS = 16384
"""Rows per onnxruntime call on the CPU. Measured on 32 features, 2 cores: an MLP (256, 256) runs
1.3x faster and peaks 190 MB lower than with 65536-row calls (its activations stay in cache), tree
ensembles and linear models run the same. Batches stay large for reading, assembly and writing,
whose per-batch costs favour big batches, and for the GPU, which wants them."""


@dataclass(frozen=True)
class Assembled:
    """A batch's model inputs, ready to run."""

    feeds: dict[str, np.ndarray]
    invalid: np.ndarray | None
    """Rows whose outputs are null (``on_null="skip"``); None when every row is valid."""
    rows: int


class BatchScorer:
    """Scores RecordBatches with one model and one plan; keeps reusable buffers.

    :meth:`assemble` and :meth:`infer` may run in two threads (assembling the next
    batch while the model runs the current one): ``buffers`` is how many assembled
    batches may be alive at once. Each is used by one thread only.
    """

    def __init__(
        self, model: Model, plan: FeaturePlan, *, on_null: OnNull, fill_value: float | None, buffers: int = 1
    ) -> None:
        self.model = model
        self.plan = plan
        self.call_rows = CPU_CALL_ROWS if model.provider == "CPUExecutionProvider" else None
        self._decoded = sorted({o.source for o in plan.outputs})
        self.assemblers = [_assembler(b, on_null=on_null, fill_value=fill_value, buffers=buffers) for b in plan.inputs]

    @property
    def null_counts(self) -> dict[str, int]:
        """Nulls met so far per feature column (by :meth:`assemble`)."""
        counts: dict[str, int] = {}
        for assembler in self.assemblers:
            for name, n in assembler.null_counts.items():
                counts[name] = counts.get(name, 0) + n
        return counts

    def score(self, batch: pa.RecordBatch, *, source: str) -> tuple[list[pa.Array], np.ndarray | None]:
        """The prediction columns for ``batch`` and the mask of rows whose outputs are null (None: no such row)."""
        assembled = self.assemble(batch, source=source)
        return self.infer(assembled), assembled.invalid

    def assemble(self, batch: pa.RecordBatch, *, source: str) -> Assembled:
        """Each model input for ``batch``, checked and converted."""
        rows = batch.num_rows
        feeds: dict[str, np.ndarray] = {}
        invalid: np.ndarray | None = None
        if rows == 0:
            return Assembled(feeds, None, 0)
        for binding, assembler in zip(self.plan.inputs, self.assemblers, strict=True):
            tensor, bad = assembler.assemble(batch, source=source)
            feeds[binding.name] = tensor.reshape(rows) if binding.rank == 1 else tensor
            if bad is not None:
                invalid = bad if invalid is None else invalid | bad
        return Assembled(feeds, invalid, rows)

    def infer(self, assembled: Assembled) -> list[pa.Array]:
        """Run the model on assembled inputs and decode its outputs into the prediction columns."""
        if assembled.rows == 0:
            return [pa.array([], o.type) for o in self.plan.outputs]
        values = self._run(assembled.feeds, assembled.rows)
        return decode_outputs(self.plan.outputs, values, rows=assembled.rows, mask=assembled.invalid)

    def _run(self, feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        size = self.plan.batch_dim
        pad = size is not None
        if size is None:
            size = self.call_rows or rows
        if rows == size or (rows < size and not pad):
            return self._checked(self.model.run(feeds), rows)
        chunks = []
        for start in range(0, rows, size):
            chunk = {name: tensor[start : start + size] for name, tensor in feeds.items()}
            fed = min(size, rows - start)
            if pad:
                chunk = {name: _pad(tensor, size) for name, tensor in chunk.items()}
                fed = size
            chunks.append(self._checked(self.model.run(chunk), fed))
        return {name: np.concatenate([c[name] for c in chunks])[:rows] for name in chunks[0]}

    def _checked(self, values: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """Every output the plan decodes must hold one row per input row of this very call."""
        for name in self._decoded:
            got = values[name].shape[0] if values[name].ndim else None
            if got != rows:
                msg = (
                    f"model {self.model.path} output {name!r} has {got} rows for a call of {rows} rows; "
                    "its scores cannot be matched to input rows: check the model's export (batch axis)"
                )
                raise ModelError(msg)
        return values


def _pad(tensor: np.ndarray, size: int) -> np.ndarray:
    """``tensor`` grown to ``size`` rows with copies of its last row: inputs the model surely accepts."""
    missing = size - tensor.shape[0]
    if missing == 0:
        return tensor
    return np.concatenate([tensor, np.repeat(tensor[-1:], missing, axis=0)])


def _assembler(
    binding: InputBinding, *, on_null: OnNull, fill_value: float | None, buffers: int
) -> FeatureAssembler | VectorAssembler:
    common: dict[str, Any] = {
        "dtype": binding.dtype,
        "on_null": on_null,
        "fill_value": binding.fill(fill_value),
        "input_name": binding.name,
        "input_desc": binding.info.describe(),
        "imputes": binding.imputes,
    }
    if binding.vector:
        return VectorAssembler(binding.columns[0], width=binding.width, **common)
    return FeatureAssembler(binding.columns, buffers=buffers, **common)
