"""Airflow DAG: score each day's applications, then summarise the scores with DuckDB.

Install batchscore on the workers (e.g. in /opt/batchscore/.venv) and point
BATCHSCORE_HOME at the checkout holding jobs/ and the data. The job file's
relative paths resolve against the job file, so the task's working folder does
not matter. A retry resumes: parts committed before a crash are kept.

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
from datetime import timedelta

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

BATCHSCORE_HOME = os.environ.get("BATCHSCORE_HOME", "/opt/batchscore")

# {{ ds }} is the run's logical date, YYYY-MM-DD: the day whose partition is scored.
SCORE_COMMAND = ".venv/bin/batchscore run jobs/nightly_example.toml --ds {{ ds }} --log-format json"

SUMMARY_SQL = """
SELECT ds, count(*) AS applications, avg(prob_bad) AS avg_prob_bad, count(*) FILTER (prediction = 'bad') AS bad
FROM read_parquet('{home}/out/nightly/*/*.parquet', hive_partitioning = true)
WHERE ds = ?
GROUP BY ds
"""


def summarize(ds: str, home: str) -> dict[str, float]:
    """The downstream query: read the day's committed scores (only once _SUCCESS is there)."""
    import duckdb

    folder = os.path.join(home, "out", "nightly", f"ds={ds}")
    if not os.path.exists(os.path.join(folder, "_SUCCESS")):
        msg = f"{folder} has no _SUCCESS marker: the scoring task did not finish"
        raise RuntimeError(msg)
    row = duckdb.connect().execute(SUMMARY_SQL.format(home=home), [ds]).fetchone()
    if row is None or row[1] == 0:
        msg = f"no scores for {ds} in {folder}"
        raise RuntimeError(msg)
    return {"applications": row[1], "avg_prob_bad": row[2], "bad": row[3]}


with DAG(
    dag_id="batchscore_nightly",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 17, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["scoring"],
):
    score = BashOperator(task_id="score", bash_command=SCORE_COMMAND, cwd=BATCHSCORE_HOME)
    report = PythonOperator(
        task_id="summarize",
        python_callable=summarize,
        op_kwargs={"ds": "{{ ds }}", "home": BATCHSCORE_HOME},
    )
    score >> report
