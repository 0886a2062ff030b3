"""TRAIN from Python through psycopg 3: parameters bound by the driver, progress NOTICEs
received, results and the run read back, a failure caught as a SQLSTATE.

Usage: python3 train_script.py <conninfo> <iris.csv>
"""

import json
import sys

import psycopg
from psycopg import errors


def main() -> None:
    conninfo, csv_path = sys.argv[1], sys.argv[2]
    conn = psycopg.connect(conninfo, autocommit=True, application_name="train_script")
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute(
        "CREATE TABLE iris (sepal_length float8, sepal_width float8, petal_length float8,"
        " petal_width float8, species text)"
    )
    with open(csv_path) as f, conn.cursor().copy(
        "COPY iris FROM STDIN WITH (FORMAT csv, HEADER true)"
    ) as copy:
        copy.write(f.read())

    # Every argument bound as a parameter (psycopg sends $1..$4 in the extended protocol).
    row = conn.execute(
        "SELECT run_id, version, task, metrics FROM train(%s, %s, %s, %s)",
        (
            "py_iris",
            "SELECT * FROM iris",
            "species",
            json.dumps({"epochs": 60, "learning_rate": 0.01, "seed": 11}),
        ),
    ).fetchone()
    run_id, version, task, metrics = row
    metrics = json.loads(metrics)
    assert version == 1 and task == "classification", row
    assert metrics["accuracy"] >= 0.9, metrics
    assert any("epoch 60/60" in n for n in notices), notices
    assert any("stored version 1" in n for n in notices), notices

    status, user = conn.execute(
        "SELECT status, source FROM runbase.runs WHERE run_id = %s", (run_id,)
    ).fetchone()
    assert status == "FINISHED" and user == "train_script", (status, user)
    epochs = conn.execute(
        "SELECT count(*) FROM runbase.metrics WHERE run_id = %s AND key = 'val_loss'", (run_id,)
    ).fetchone()[0]
    assert epochs == 60, epochs

    # The same statement again is the next version; reproduce takes a bound run id too.
    again = conn.execute("SELECT version FROM reproduce(%s)", (run_id,)).fetchone()[0]
    assert again == 2, again

    try:
        conn.execute(
            "SELECT * FROM train(%s, %s, %s)", ("py_bad", "SELECT * FROM iris", "nope")
        )
        raise SystemExit("an unknown target did not fail")
    except errors.UndefinedColumn:
        pass
    print(f"ok: trained {run_id} version {version}, {len(notices)} notices")


if __name__ == "__main__":
    main()
