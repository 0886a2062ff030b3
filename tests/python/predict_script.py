"""PREDICT from Python through psycopg 3, checked against PyTorch itself:

- a model scripted in PyTorch is imported with import_model and served by runbase; runbase's
  predictions equal the module's own outputs on the same rows;
- a model trained in runbase is exported with export_model, loaded with torch.jit.load, and
  gives runbase's predictions on the same rows;
- predict's arguments bound as parameters (statement described with the bound values);
- a blob that is not TorchScript, and a spec that does not match the module, are refused
  with SQLSTATE 22023 and register nothing.

Usage: python3 predict_script.py <conninfo> <iris.csv>
"""

import io
import json
import sys

import psycopg
import torch
from psycopg import errors

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TOL = 1e-5


class Scorer(torch.nn.Module):
    """A small MLP over the four iris measurements."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def save(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def model_count(conn, name: str) -> int:
    return conn.execute("SELECT count(*) FROM runbase.models WHERE name = %s", (name,)).fetchone()[0]


def main() -> None:
    conninfo, csv_path = sys.argv[1], sys.argv[2]
    conn = psycopg.connect(conninfo, autocommit=True, application_name="predict_script")
    conn.execute(
        "CREATE TABLE iris (sepal_length float8, sepal_width float8, petal_length float8,"
        " petal_width float8, species text)"
    )
    with open(csv_path) as f, conn.cursor().copy(
        "COPY iris FROM STDIN WITH (FORMAT csv, HEADER true)"
    ) as copy:
        copy.write(f.read())
    conn.execute(
        "CREATE TABLE iris_all AS SELECT CAST(row_number() OVER () AS bigint) AS id, * FROM iris"
    )
    rows = conn.execute(f"SELECT id, {', '.join(FEATURES)}, species FROM iris_all ORDER BY id").fetchall()
    x = torch.tensor([[float(v) for v in r[1:5]] for r in rows], dtype=torch.float32)
    torch.manual_seed(0)

    # 1. A regressor made in PyTorch, imported and served.
    reg = Scorer(1).eval()
    version = conn.execute(
        "SELECT import_model(%s, %s, %s)",
        ("py_reg", save(reg), json.dumps({"inputs": FEATURES, "output": "regression"})),
    ).fetchone()[0]
    assert version == 1, version
    with torch.no_grad():
        expected = reg(x).reshape(-1).tolist()
    served = conn.execute(
        "SELECT id, prediction FROM predict('py_reg', 'SELECT * FROM iris_all') ORDER BY id"
    ).fetchall()
    assert len(served) == len(rows)
    worst = max(abs(p - e) for (_, p), e in zip(served, expected))
    assert worst < TOL, worst

    # Inputs are matched by name, not position: a reordered query gives the same answers.
    reordered = conn.execute(
        "SELECT id, prediction FROM predict('py_reg', 'SELECT petal_width, id, sepal_width,"
        " petal_length, sepal_length FROM iris_all') ORDER BY id"
    ).fetchall()
    assert reordered == served

    # 2. A classifier with labels; predict's arguments bound by the driver.
    clf = Scorer(3).eval()
    classes = ["setosa", "versicolor", "virginica"]
    conn.execute(
        "SELECT import_model(%s, %s, %s)",
        (
            "py_clf",
            save(clf),
            json.dumps({"inputs": FEATURES, "output": "classification", "classes": classes}),
        ),
    )
    served = conn.execute(
        "SELECT id, prediction, probabilities FROM predict(%s, %s) ORDER BY id",
        ("py_clf", "SELECT * FROM iris_all"),
    ).fetchall()
    with torch.no_grad():
        probs = torch.softmax(clf(x).double(), 1)
    for (_, label, p), q in zip(served, probs.tolist()):
        assert max(abs(a - b) for a, b in zip(p, q)) < TOL, (p, q)
        assert label == classes[max(range(3), key=lambda i: q[i])], (label, q)

    # A tensor model: any [rows, k] output comes back as double precision[].
    emb = Scorer(2).eval()
    conn.execute(
        "SELECT import_model(%s, %s, %s)",
        ("py_emb", save(emb), json.dumps({"inputs": FEATURES, "output": "tensor"})),
    )
    served = conn.execute(
        "SELECT prediction FROM predict('py_emb', 'SELECT * FROM iris_all ORDER BY id')"
    ).fetchall()
    with torch.no_grad():
        expected = emb(x).tolist()
    assert all(
        max(abs(a - b) for a, b in zip(p, e)) < TOL for (p,), e in zip(served, expected)
    )

    # 3. Bad blobs and specs register nothing.
    for blob, spec, why in [
        (b"not a model", {"inputs": FEATURES, "output": "regression"}, "not TorchScript"),
        (save(reg), {"inputs": FEATURES[:2], "output": "regression"}, "2 inputs for a 4-input module"),
        (save(clf), {"inputs": FEATURES, "output": "classification", "classes": ["a", "b"]}, "2 classes for 3 logits"),
        (save(clf), {"inputs": FEATURES, "output": "regression"}, "3 outputs for a regressor"),
    ]:
        try:
            conn.execute("SELECT import_model('py_bad', %s, %s)", (blob, json.dumps(spec)))
            raise SystemExit(f"import of {why} did not fail")
        except errors.InvalidParameterValue:
            pass
    assert model_count(conn, "py_bad") == 0
    try:
        conn.execute("SELECT import_model('py_bad', %s, %s)", (save(reg), "{not json"))
        raise SystemExit("a spec that is not JSON did not fail")
    except errors.InvalidTextRepresentation:
        pass

    # 4. A model trained in runbase, exported and loaded in PyTorch.
    conn.execute(
        "SELECT * FROM train('rb_iris', %s, 'species', %s)",
        (
            f"SELECT {', '.join(FEATURES)}, species FROM iris_all WHERE id % 4 <> 0",
            json.dumps({"epochs": 60, "learning_rate": 0.01, "seed": 5}),
        ),
    )
    blob = conn.execute("SELECT export_model('rb_iris')").fetchone()[0]
    module = torch.jit.load(io.BytesIO(bytes(blob)))
    with torch.no_grad():
        logits = module(x)
        probs = torch.softmax(logits.double(), 1).tolist()
    spec = json.loads(
        conn.execute("SELECT spec FROM runbase.models WHERE name = 'rb_iris'").fetchone()[0]
    )
    labels = spec["output"]["classes"]
    served = conn.execute(
        "SELECT id, prediction, probabilities FROM predict('rb_iris', 'SELECT * FROM iris_all') ORDER BY id"
    ).fetchall()
    for (_, label, p), q in zip(served, probs):
        assert max(abs(a - b) for a, b in zip(p, q)) < TOL, (p, q)
        assert label == labels[max(range(len(q)), key=lambda i: q[i])]
    held_out = [(r, s) for r, s in zip(rows, served) if r[0] % 4 == 0]
    accuracy = sum(r[5] == s[1] for r, s in held_out) / len(held_out)
    assert accuracy >= 0.9, accuracy
    # runbase.models shows what the exported module takes.
    inputs = conn.execute(
        "SELECT input_columns FROM runbase.models WHERE name = 'rb_iris'"
    ).fetchone()[0]
    assert inputs == FEATURES, inputs

    print(f"OK: imported 3 models, exported 1; held-out accuracy of the exported model {accuracy:.3f}")


if __name__ == "__main__":
    main()
