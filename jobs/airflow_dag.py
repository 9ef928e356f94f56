"""Airflow DAG: score each day's applications, then summarise the scores with DuckDB.

Install batchscore on the workers (``make test`` or ``make demo`` creates
``.venv`` in the checkout) and point BATCHSCORE_HOME at that checkout, which
holds jobs/, the data and ``.venv``. Both tasks run in batchscore's own
environment, so Airflow's needs nothing but Airflow: ``score`` runs
``.venv/bin/batchscore``, and ``summarize`` is an ExternalPythonOperator that
runs its function with ``.venv/bin/python``, where DuckDB is installed. The job
file's relative paths resolve against the job file, so the task's working
folder does not matter. A retry resumes: parts committed before a crash are kept.
(Before it runs ``summarize``, Airflow checks whether ``.venv`` has pendulum and logs
the ``No module named 'pendulum'`` it gets: harmless, the function needs none.)

Written for Airflow 3 (``airflow.providers.standard`` and ``airflow.sdk``); it
falls back to the Airflow 2 import paths (2.4 or newer) where those are missing.

Exit codes (see README): 2 bad job or flags, 3 bad input, 4 model refused or
unloadable, 5 output locked by another run or not resumable. Airflow fails the
task on any of them; only 5 is worth a retry, and the retry does no harm on the others.
6: the night's data drifted from the night before beyond the job's [drift] limits. The
scores are committed, but the task fails so that `summarize` waits for a person; a retry
checks again and fails again. Look with `batchscore report out/nightly/ds=<ds>`, then
mark the task success (or fix the input and rescore with --set output.mode=overwrite).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.python import ExternalPythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.4+
    from airflow import DAG  # type: ignore[no-redef]
    from airflow.operators.bash import BashOperator  # type: ignore[no-redef]
    from airflow.operators.python import ExternalPythonOperator  # type: ignore[no-redef]

BATCHSCORE_HOME = os.environ.get("BATCHSCORE_HOME", "/opt/batchscore")
BATCHSCORE_PYTHON = os.path.join(BATCHSCORE_HOME, ".venv", "bin", "python")

# {{ ds }} is the run's logical date, YYYY-MM-DD: the day whose partition is scored.
SCORE_COMMAND = ".venv/bin/batchscore run jobs/nightly_example.toml --ds {{ ds }} --log-format json"


def summarize(ds: str, home: str) -> dict[str, Any]:
    """The downstream query: read the day's committed scores (only once _SUCCESS is there).

    It runs in batchscore's interpreter (ExternalPythonOperator), which sees only
    this function's source: everything it uses is imported or defined inside it.
    """
    import os

    import duckdb

    folder = os.path.join(home, "out", "nightly", f"ds={ds}")
    if not os.path.exists(os.path.join(folder, "_SUCCESS")):
        msg = f"{folder} has no _SUCCESS marker: the scoring task did not finish"
        raise RuntimeError(msg)
    sql = """
        SELECT count(*) AS applications, avg(prob_bad) AS avg_prob_bad, count(*) FILTER (prediction = 'bad') AS bad
        FROM read_parquet(?)
    """
    row = duckdb.connect().execute(sql, [os.path.join(folder, "*.parquet")]).fetchone()
    if row is None or row[0] == 0:
        msg = f"no scores for {ds} in {folder}"
        raise RuntimeError(msg)
    summary = {"ds": ds, "applications": row[0], "avg_prob_bad": row[1], "bad": row[2]}
    print(f"batchscore summary: {summary}")
    return summary


with DAG(
    dag_id="batchscore_nightly",
    schedule="@daily",
    start_date=datetime(2026, 11, 17, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["scoring"],
):
    score = BashOperator(task_id="score", bash_command=SCORE_COMMAND, cwd=BATCHSCORE_HOME)
    report = ExternalPythonOperator(
        task_id="summarize",
        python=BATCHSCORE_PYTHON,
        python_callable=summarize,
        op_kwargs={"ds": "{{ ds }}", "home": BATCHSCORE_HOME},
        expect_airflow=False,
    )
    score >> report
