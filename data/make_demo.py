"""Generate the batchscore demo dataset and model (synthetic credit-risk data).

What it makes (under ``--out``, default ``data/demo``):

* ``ds=2026-11-17/part-0.parquet`` ... ``ds=2026-11-20/part-0.parquet`` --
  a synthetic loan-application table split into four hive-style partitions by
  application date (about 50k rows each for the default 200k rows). The ``ds``
  column is *not* stored in the files; it comes from the folder name.
  Columns: ``application_id`` (int64, unique, increasing), ``region`` (string),
  ``product`` (string), then the 20 numeric model features listed in
  ``FEATURES`` (float64 / int32 / int64 / bool). No nulls, no target column.
  zstd compression, row groups of 16384 rows.
* ``model.onnx`` -- a scikit-learn ``Pipeline(StandardScaler(),
  LogisticRegression(max_iter=1000))`` trained on the 20 features (as float32,
  in ``FEATURES`` order) against string labels ``"bad"``/``"good"``, converted
  with skl2onnx defaults: one float input ``X`` of shape [None, 20], outputs
  ``output_label`` (string tensor) and ``output_probability`` (ZipMap:
  sequence of map<string, float>).
* ``model_columns.onnx`` -- a ``ColumnTransformer`` pipeline with one input per
  column, as skl2onnx converts them: ``income`` (float, fed from
  ``annual_income``: the name differs on purpose), ``age`` (int64),
  ``debt_to_income`` and ``external_risk_score`` (float), ``region`` and
  ``product`` (strings, one-hot encoded, unknown categories ignored); same labels.
* ``features.txt`` -- the 20 feature names, one per line, in model order.
* ``README.md`` -- short description of the above.

The label ("bad" about 15% of rows) is drawn from a logistic function of the
features plus an unobserved risk factor, so the model is meaningful but not
perfect. The labels are used only for training and are not written out.

Regenerate (from the repository root)::

    .venv/bin/python data/make_demo.py            # defaults: --out data/demo --rows 200000 --seed 7

The output is deterministic for a given seed and library versions (numpy,
scikit-learn, skl2onnx, pyarrow); nothing depends on the clock.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PARTITIONS = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"]
# Share of rows per partition (slightly uneven, like real daily volumes).
PARTITION_SHARES = [0.24, 0.26, 0.255, 0.245]

REGIONS = ["north", "south", "east", "west", "central"]
REGION_P = [0.22, 0.20, 0.18, 0.25, 0.15]
PRODUCTS = ["card", "personal_loan", "auto", "mortgage"]
PRODUCT_P = [0.40, 0.30, 0.20, 0.10]

# The 20 model features, in file and model order, with their Arrow types.
FEATURES: list[tuple[str, pa.DataType]] = [
    ("age", pa.int32()),
    ("annual_income", pa.float64()),
    ("months_employed", pa.int32()),
    ("debt_to_income", pa.float64()),
    ("credit_utilization", pa.float64()),
    ("loan_amount", pa.float64()),
    ("loan_term_months", pa.int32()),
    ("interest_rate", pa.float64()),
    ("payment_to_income", pa.float64()),
    ("num_open_accounts", pa.int32()),
    ("num_credit_inquiries_6m", pa.int32()),
    ("num_late_payments_12m", pa.int32()),
    ("credit_history_years", pa.float64()),
    ("total_revolving_balance", pa.float64()),
    ("savings_balance", pa.float64()),
    ("avg_monthly_spend", pa.float64()),
    ("external_risk_score", pa.float64()),
    ("months_at_address", pa.int64()),
    ("has_mortgage", pa.bool_()),
    ("has_cosigner", pa.bool_()),
]
FEATURE_NAMES = [name for name, _ in FEATURES]

ROW_GROUP_SIZE = 16384
TARGET_BAD_RATE = 0.15
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return (columns, labels). Values are rounded to realistic precision,
    which also keeps the Parquet files small."""
    # Unobserved credit "quality" factor: higher = riskier.
    risk = rng.standard_normal(n)

    region_idx = rng.choice(len(REGIONS), size=n, p=REGION_P)
    product_idx = rng.choice(len(PRODUCTS), size=n, p=PRODUCT_P)
    is_card, is_personal, is_auto, is_mortgage = (product_idx == i for i in range(4))

    age = np.clip(np.rint(rng.normal(41, 12, n) - 2.0 * risk), 18, 85).astype(np.int32)
    years_adult = (age - 18).astype(np.float64)

    regional_income = np.array([1.00, 0.92, 1.05, 1.10, 1.15])[region_idx]
    log_income = np.log(52_000) + 0.012 * (age - 40) - 0.18 * risk + rng.normal(0, 0.45, n)
    annual_income = np.clip(np.exp(log_income) * regional_income, 9_000, 750_000)
    annual_income = np.round(annual_income / 500.0) * 500.0

    months_employed = np.minimum(rng.gamma(2.0, 30.0, n) * np.exp(-0.25 * risk), years_adult * 12)
    months_employed = np.rint(months_employed).astype(np.int32)

    has_mortgage = is_mortgage | (
        rng.random(n) < _sigmoid(-2.2 + 0.05 * (age - 30) + 0.9 * (np.log(annual_income) - np.log(50_000)))
    )
    has_cosigner = rng.random(n) < np.where(age < 25, 0.18, 0.05)

    debt_to_income = np.clip(rng.beta(2.2, 6.5, n) + 0.06 * risk + 0.08 * has_mortgage, 0.0, 1.5)
    debt_to_income = np.round(debt_to_income, 3)

    credit_utilization = np.clip(rng.beta(2.0, 4.0, n) * np.exp(0.35 * risk), 0.0, 1.25)
    credit_utilization = np.round(credit_utilization, 3)

    loan_amount = np.empty(n)
    loan_amount[is_card] = np.round(np.clip(rng.lognormal(np.log(4_000), 0.6, is_card.sum()), 500, 30_000) / 100) * 100
    loan_amount[is_personal] = (
        np.round(np.clip(rng.lognormal(np.log(12_000), 0.6, is_personal.sum()), 1_000, 60_000) / 250) * 250
    )
    loan_amount[is_auto] = (
        np.round(np.clip(rng.lognormal(np.log(26_000), 0.4, is_auto.sum()), 4_000, 120_000) / 500) * 500
    )
    loan_amount[is_mortgage] = (
        np.round(
            np.clip(annual_income[is_mortgage] * rng.uniform(2.0, 5.0, is_mortgage.sum()), 50_000, 2_000_000) / 5_000
        )
        * 5_000
    )

    loan_term_months = np.empty(n, dtype=np.int32)
    loan_term_months[is_card] = 12
    loan_term_months[is_personal] = rng.choice(
        [12, 24, 36, 48, 60], size=is_personal.sum(), p=[0.1, 0.2, 0.35, 0.15, 0.2]
    )
    loan_term_months[is_auto] = rng.choice([36, 48, 60, 72], size=is_auto.sum(), p=[0.15, 0.25, 0.4, 0.2])
    loan_term_months[is_mortgage] = rng.choice([180, 240, 360], size=is_mortgage.sum(), p=[0.25, 0.15, 0.6])

    external_risk_score = np.round(_sigmoid(-1.6 + 0.9 * risk + rng.normal(0, 0.6, n)), 3)

    base_rate = np.array([19.5, 10.5, 7.0, 5.5])[product_idx]
    interest_rate = np.clip(
        base_rate + 3.5 * external_risk_score * np.array([2.0, 1.5, 1.0, 0.5])[product_idx] + rng.normal(0, 0.6, n),
        2.5,
        35.99,
    )
    interest_rate = np.round(interest_rate * 4) / 4  # quoted in quarter points

    r = interest_rate / 100 / 12
    monthly_payment = loan_amount * r / (1 - (1 + r) ** (-loan_term_months.astype(np.float64)))
    payment_to_income = np.round(np.clip(monthly_payment / (annual_income / 12), 0, 5), 3)

    num_open_accounts = (rng.poisson(4.0, n) + rng.poisson(np.clip(years_adult / 8, 0.1, None))).astype(np.int32)
    num_credit_inquiries_6m = rng.poisson(0.8 * np.exp(0.45 * risk)).astype(np.int32)
    num_late_payments_12m = rng.poisson(0.25 * np.exp(0.9 * risk)).astype(np.int32)

    credit_history_years = np.round(np.minimum(rng.gamma(3.0, 4.0, n) * np.exp(-0.15 * risk), years_adult), 1)

    total_credit_limit = np.round(np.clip(annual_income * rng.uniform(0.1, 0.5, n), 500, None) / 500) * 500
    total_revolving_balance = np.round(credit_utilization * total_credit_limit / 10) * 10

    savings_balance = np.where(
        rng.random(n) < _sigmoid(-1.0 + 0.8 * risk),
        0.0,
        np.clip(rng.lognormal(np.log(annual_income * 0.08), 1.0), 0, 2_000_000),
    )
    savings_balance = np.round(savings_balance / 50) * 50

    avg_monthly_spend = np.round(annual_income / 12 * np.clip(rng.normal(0.35, 0.12, n), 0.05, 1.5) / 10) * 10

    months_at_address = np.rint(np.minimum(rng.gamma(1.6, 40.0, n), years_adult * 12 + 6)).astype(np.int64)

    cols = {
        "region": np.array(REGIONS, dtype=object)[region_idx],
        "product": np.array(PRODUCTS, dtype=object)[product_idx],
        "age": age,
        "annual_income": annual_income,
        "months_employed": months_employed,
        "debt_to_income": debt_to_income,
        "credit_utilization": credit_utilization,
        "loan_amount": loan_amount,
        "loan_term_months": loan_term_months,
        "interest_rate": interest_rate,
        "payment_to_income": payment_to_income,
        "num_open_accounts": num_open_accounts,
        "num_credit_inquiries_6m": num_credit_inquiries_6m,
        "num_late_payments_12m": num_late_payments_12m,
        "credit_history_years": credit_history_years,
        "total_revolving_balance": total_revolving_balance,
        "savings_balance": savings_balance,
        "avg_monthly_spend": avg_monthly_spend,
        "external_risk_score": external_risk_score,
        "months_at_address": months_at_address,
        "has_mortgage": has_mortgage,
        "has_cosigner": has_cosigner,
    }

    # Label: logistic function of observed features plus the unobserved factor.
    score = (
        2.2 * (external_risk_score - 0.2)
        + 1.6 * (credit_utilization - 0.35)
        + 1.8 * (debt_to_income - 0.3)
        + 0.9 * np.minimum(payment_to_income, 1.0)
        + 0.45 * num_late_payments_12m
        + 0.15 * num_credit_inquiries_6m
        - 0.45 * (np.log(annual_income) - np.log(50_000))
        - 0.004 * (months_employed - 60).clip(-60, 120)
        - 0.02 * (credit_history_years - 10)
        - 0.12 * np.log1p(savings_balance / 1_000)
        - 0.25 * has_mortgage
        - 0.20 * has_cosigner
        + 0.6 * risk
    )
    # Pick the intercept so the expected bad rate is TARGET_BAD_RATE.
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(score + mid).mean() < TARGET_BAD_RATE:
            lo = mid
        else:
            hi = mid
    p_bad = _sigmoid(score + (lo + hi) / 2)
    labels = np.where(rng.random(n) < p_bad, "bad", "good")
    return cols, labels


def write_partitions(out: Path, n: int, cols: dict[str, np.ndarray], rng: np.random.Generator) -> list[int]:
    # Unique, strictly increasing ids with small random gaps.
    application_id = 100_000_000 + np.cumsum(rng.integers(1, 4, n)).astype(np.int64)

    schema = pa.schema(
        [
            pa.field("application_id", pa.int64(), nullable=False),
            pa.field("region", pa.string(), nullable=False),
            pa.field("product", pa.string(), nullable=False),
        ]
        + [pa.field(name, typ, nullable=False) for name, typ in FEATURES]
    )
    bounds = np.rint(np.cumsum([0.0, *PARTITION_SHARES]) / sum(PARTITION_SHARES) * n).astype(int)
    counts = []
    for i, ds in enumerate(PARTITIONS):
        s, e = bounds[i], bounds[i + 1]
        arrays = [pa.array(application_id[s:e], pa.int64())]
        arrays += [pa.array(cols[f.name][s:e], f.type) for f in list(schema)[1:]]
        table = pa.Table.from_arrays(arrays, schema=schema)
        part_dir = out / f"ds={ds}"
        part_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part_dir / "part-0.parquet", compression="zstd", row_group_size=ROW_GROUP_SIZE)
        counts.append(int(e - s))
    return counts


def train_model(out: Path, cols: dict[str, np.ndarray], labels: np.ndarray) -> tuple[float, dict[str, int]]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.column_stack([cols[name].astype(np.float32) for name in FEATURE_NAMES]).astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    pipe.fit(X, labels)
    bad_col = list(pipe.classes_).index("bad")
    auc = roc_auc_score(labels == "bad", pipe.predict_proba(X)[:, bad_col])

    onx = to_onnx(pipe, X[:1].astype(np.float32), target_opset=TARGET_OPSET)
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    (out / "features.txt").write_text("\n".join(FEATURE_NAMES) + "\n")
    opsets = {o.domain: o.version for o in onx.opset_import}  # skl2onnx may lower the ml opset
    return float(auc), opsets


# model_columns.onnx: (input name, column, input type)
COLUMN_INPUTS = [
    ("income", "annual_income", "float"),
    ("age", "age", "int64"),
    ("debt_to_income", "debt_to_income", "float"),
    ("external_risk_score", "external_risk_score", "float"),
    ("region", "region", "string"),
    ("product", "product", "string"),
]


def train_column_model(out: Path, cols: dict[str, np.ndarray], labels: np.ndarray) -> float:
    """model_columns.onnx: one typed input per column; returns the training AUC."""
    import pandas as pd
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame({name: cols[column] for name, column, _ in COLUMN_INPUTS})
    numeric = [name for name, _, kind in COLUMN_INPUTS if kind != "string"]
    strings = [name for name, _, kind in COLUMN_INPUTS if kind == "string"]
    encode = ColumnTransformer(
        [("num", StandardScaler(), numeric), ("cat", OneHotEncoder(handle_unknown="ignore"), strings)]
    )
    pipe = make_pipeline(encode, LogisticRegression(max_iter=1000)).fit(frame, labels)
    bad_col = list(pipe.classes_).index("bad")
    auc = roc_auc_score(labels == "bad", pipe.predict_proba(frame)[:, bad_col])
    tensor = {"float": FloatTensorType, "int64": Int64TensorType, "string": StringTensorType}
    types = [(name, tensor[kind]([None, 1])) for name, _, kind in COLUMN_INPUTS]
    onx = to_onnx(pipe, initial_types=types, target_opset=TARGET_OPSET)
    (out / "model_columns.onnx").write_bytes(onx.SerializeToString())
    return float(auc)


README = """\
# batchscore demo data

Synthetic credit-risk applications for trying out `batchscore`. Nothing here is real data.

## Files

- `ds=2026-11-17/part-0.parquet` ... `ds=2026-11-20/part-0.parquet`: {rows} applications in
  four hive-style partitions by application date ({counts} rows). The `ds` column is not
  stored in the files; read with hive partitioning to get it. This folder also holds
  non-Parquet files, so readers must select `*.parquet` (e.g. glob `data/demo/*/*.parquet`, or
  `pyarrow.dataset.dataset(..., exclude_invalid_files=True)`). zstd, row groups of 16384 rows,
  no nulls. The target label is not included.
- `model.onnx`: scikit-learn `Pipeline(StandardScaler(), LogisticRegression(max_iter=1000))`
  converted with skl2onnx defaults (opset {opset}, ai.onnx.ml {mlopset}). Input `X`: float32
  `[None, 20]` (the features below, in order). Outputs `output_label` (string tensor, `"bad"` or
  `"good"`) and `output_probability` (ZipMap: sequence of map string -> float, keys `"bad"`,
  `"good"`). Training AUC {auc:.3f}.
- `model_columns.onnx`: a `ColumnTransformer` pipeline (scaled `income`, `age`, `debt_to_income`,
  `external_risk_score`; one-hot `region`, `product`, unknown categories ignored) and a
  `LogisticRegression`, converted by skl2onnx with one input per column: `income` float32 `[None, 1]`
  (fed from the `annual_income` column), `age` int64 `[None, 1]`, `debt_to_income` and
  `external_risk_score` float32 `[None, 1]`, `region` and `product` string `[None, 1]`. Same outputs
  as `model.onnx`. Training AUC {column_auc:.3f}.
- `features.txt`: the 20 model features, one per line, in model input order.

## Columns

| column | type |
|---|---|
{table}

## How it was made

`data/make_demo.py` draws correlated features from simple distributions around a hidden risk
factor, draws a `bad`/`good` label (bad rate about {bad:.1%}) from a logistic function of the
features plus that hidden factor, trains the model on all rows (features cast to float32), and
writes everything out. Same seed and library versions give the same files.

Regenerate from the repository root:

```
.venv/bin/python data/make_demo.py --out data/demo --rows {rows} --seed {seed}
```
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    ap.add_argument("--rows", type=int, default=200_000, help="total rows (default: 200000)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    # Remove stale partitions from earlier runs so row counts stay exact.
    for d in out.glob("ds=*"):
        if d.is_dir():
            shutil.rmtree(d)
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    cols, labels = generate(args.rows, rng)
    counts = write_partitions(out, args.rows, cols, rng)
    auc, opsets = train_model(out, cols, labels)
    column_auc = train_column_model(out, cols, labels)

    type_rows = [
        "| application_id | int64 (unique, increasing) |",
        "| region | string (" + ", ".join(REGIONS) + ") |",
        "| product | string (" + ", ".join(PRODUCTS) + ") |",
    ]
    type_rows += [f"| {name} | {typ} |" for name, typ in FEATURES]
    (out / "README.md").write_text(
        README.format(
            rows=args.rows,
            counts=" / ".join(str(c) for c in counts),
            opset=opsets[""],
            mlopset=opsets.get("ai.onnx.ml"),
            auc=auc,
            column_auc=column_auc,
            table="\n".join(type_rows),
            bad=float((labels == "bad").mean()),
            seed=args.seed,
        )
    )
    print(
        f"wrote {args.rows} rows to {out} ({counts}); bad rate {(labels == 'bad').mean():.3f}; training AUC {auc:.3f}"
    )


if __name__ == "__main__":
    main()
