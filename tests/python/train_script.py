"""TRAIN from Python through psycopg 3: parameters bound by the driver, progress NOTICEs
received, results and the run read back, a stored model scored in PyTorch on rows it never
saw, a failure caught as a SQLSTATE.

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

    # Held out for real: train without every fourth row, then score those rows in Python
    # with the stored TorchScript module (the model file runbase.models points at).
    conn.execute("CREATE TABLE iris_split AS SELECT CAST(row_number() OVER () AS bigint) AS id, * FROM iris")
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    query = f"SELECT {', '.join(features)}, species FROM iris_split WHERE id % 4 <> 0"
    conn.execute(
        "SELECT * FROM train('py_split', %s, 'species', %s)",
        (query, json.dumps({"epochs": 80, "learning_rate": 0.01, "seed": 3})),
    )
    uri, inputs = conn.execute(
        "SELECT uri, input_columns FROM runbase.models WHERE name = 'py_split'"
    ).fetchone()
    assert inputs == features, inputs
    held_out = conn.execute(
        f"SELECT {', '.join(features)}, species FROM iris_split WHERE id % 4 = 0"
    ).fetchall()
    import torch
    from urllib.parse import urlparse

    module = torch.jit.load(urlparse(uri).path)
    x = torch.tensor([[float(v) for v in r[:4]] for r in held_out], dtype=torch.float32)
    classes = sorted({r[4] for r in held_out})  # classes are sorted; logits follow that order
    predicted = [classes[i] for i in module(x).argmax(1).tolist()]
    accuracy = sum(p == r[4] for p, r in zip(predicted, held_out)) / len(held_out)
    assert len(held_out) == 37 and accuracy >= 0.9, (len(held_out), accuracy)

    try:
        conn.execute(
            "SELECT * FROM train(%s, %s, %s)", ("py_bad", "SELECT * FROM iris", "nope")
        )
        raise SystemExit("an unknown target did not fail")
    except errors.UndefinedColumn:
        pass
    print(f"ok: trained {run_id} version {version}, {len(notices)} notices, held-out accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
