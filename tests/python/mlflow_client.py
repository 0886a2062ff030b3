"""The stock MLflow client (3.17.2), unchanged, against a tracking server.

    python3 mlflow_client.py workflow --uri http://127.0.0.1:5480 --out result.json
        [--sql-run RUN_ID] [--sql-experiment NAME]
    python3 mlflow_client.py errors --uri http://127.0.0.1:5480
    python3 mlflow_client.py auth --uri http://127.0.0.1:5480

`workflow` drives the fluent API and MlflowClient the way training scripts do
(set_experiment, nested runs, params, metrics sync and asynchronous, tags, artifacts,
datasets, searches, a 30,000-point history, a TorchScript model logged, registered,
aliased and loaded back) and writes a normalized summary of what the server answered,
so the same script run against `mlflow server` and against runbase can be compared.
With --sql-run it also reads a run that was logged over SQL. `errors` checks MLflow's
error answers over plain HTTP; `auth` checks basic auth (the server runs --auth scram).
Every check asserts; a failure exits non-zero.
"""

import argparse
import json
import math
import os
import sys
import tempfile

import requests


def normal_value(x):
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    # MLflow's SQL store clamps infinities to the largest double; runbase keeps them.
    if isinstance(x, float) and abs(x) >= sys.float_info.max:
        return "Infinity" if x > 0 else "-Infinity"
    return x


def user_tags(tags):
    """The tags a script set, and the ones MLflow's own client sets that matter."""
    return {
        k: v
        for k, v in tags.items()
        if not k.startswith("mlflow.") or k in ("mlflow.runName", "mlflow.note.content")
    }


def workflow(args):
    import mlflow
    import torch
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag, ViewType
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(args.uri)
    client = MlflowClient(args.uri)
    out = {}

    exp = mlflow.set_experiment("mlflow-compat")
    assert exp.name == "mlflow-compat"
    # Setting it again finds the same one.
    assert mlflow.set_experiment("mlflow-compat").experiment_id == exp.experiment_id
    client.set_experiment_tag(exp.experiment_id, "team", "vision")

    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"batch": 32, "optimizer": "adam"})
        mlflow.set_tag("stage", "dev")
        mlflow.set_tags({"owner": "ana", "dataset": "iris"})
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_metrics({"acc": step / 50.0, "val_loss": 2.0 / (step + 1)}, step=step)
        mlflow.log_metric("diverged", float("nan"), step=0)
        mlflow.log_metric("grad_norm", float("inf"), step=0)
        # Asynchronous logging: batches from the client's threads, in any order.
        for step in range(40):
            mlflow.log_metrics({"async_a": step * 1.0, "async_b": -step * 1.0}, step=step, synchronous=False)
        mlflow.flush_async_logging()
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("x", 1.0)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "notes.txt")
            with open(path, "w") as f:
                f.write("hello from the stock client\n")
            mlflow.log_artifact(path)
            plots = os.path.join(d, "plots")
            os.makedirs(os.path.join(plots, "deep"))
            with open(os.path.join(plots, "a.csv"), "w") as f:
                f.write("x,y\n1,2\n")
            with open(os.path.join(plots, "deep", "b.bin"), "wb") as f:
                f.write(bytes(range(256)) * 64)
            mlflow.log_artifacts(plots, artifact_path="plots")
        import pandas as pd

        frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.25, 0.125]})
        dataset = mlflow.data.from_pandas(frame, name="tiny", targets="b")
        mlflow.log_input(dataset, context="training")
        # A TorchScript model, logged (MLflow 3 logged models), registered and aliased.
        torch.manual_seed(0)
        scripted = torch.jit.script(torch.nn.Linear(4, 1))
        info = mlflow.pytorch.log_model(scripted, name="model", serialization_format="pickle")
        parent_id = parent.info.run_id

    # Params are write-once: another value is refused, the same is fine.
    client.log_param(parent_id, "lr", 0.01)
    try:
        client.log_param(parent_id, "lr", 0.02)
        raise AssertionError("changing a param must fail")
    except MlflowException as e:
        assert e.error_code == "INVALID_PARAMETER_VALUE", e.error_code
    # A retried batch adds nothing twice.
    points = [Metric("retry", 1.5, 1700000000000, 3)]
    client.log_batch(parent_id, metrics=points)
    client.log_batch(parent_id, metrics=points)
    assert len(client.get_metric_history(parent_id, "retry")) == 1

    # A run that failed, one deleted, one logged to after it finished.
    with mlflow.start_run(run_name="broken") as broken:
        mlflow.log_metric("loss", 9.0)
    client.set_terminated(broken.info.run_id, status="FAILED")
    with mlflow.start_run(run_name="deleted") as gone:
        mlflow.log_metric("loss", 5.0)
    client.delete_run(gone.info.run_id)
    finished = client.create_run(exp.experiment_id, run_name="late")
    client.set_terminated(finished.info.run_id)
    client.log_metric(finished.info.run_id, "loss", 0.7, step=1)

    # A long history: 30 batches of 1,000 points, read back across pages.
    big = client.create_run(exp.experiment_id, run_name="big")
    for b in range(30):
        client.log_batch(
            big.info.run_id,
            metrics=[Metric("m", float(b * 1000 + i), 1700000000000 + b * 1000 + i, b * 1000 + i) for i in range(1000)],
        )
    client.set_terminated(big.info.run_id)
    history = client.get_metric_history(big.info.run_id, "m")
    assert len(history) == 30000, len(history)
    assert sorted(p.step for p in history) == list(range(30000))
    assert all(p.value == float(p.step) for p in history)

    # Reading back.
    run = client.get_run(parent_id)
    assert run.info.run_id == parent_id and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "batch": "32", "optimizer": "adam"}, run.data.params
    assert run.data.metrics["loss"] == 1.0 / 50
    assert math.isnan(run.data.metrics["diverged"])
    assert normal_value(run.data.metrics["grad_norm"]) == "Infinity"
    assert run.data.metrics["async_a"] == 39.0
    loss = client.get_metric_history(parent_id, "loss")
    assert [p.step for p in sorted(loss, key=lambda p: p.step)] == list(range(50))
    async_b = client.get_metric_history(parent_id, "async_b")
    assert sorted(p.step for p in async_b) == list(range(40))
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert [r.info.run_name for r in children] == ["child"], children

    arts = sorted(a.path for a in client.list_artifacts(parent_id))
    plots = sorted(a.path for a in client.list_artifacts(parent_id, "plots"))
    with tempfile.TemporaryDirectory() as d:
        local = mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="plots", dst_path=d)
        with open(os.path.join(local, "deep", "b.bin"), "rb") as f:
            assert f.read() == bytes(range(256)) * 64
        notes = mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="notes.txt", dst_path=d)
        with open(notes) as f:
            assert f.read() == "hello from the stock client\n"
    inputs = [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs]
    assert inputs == [("tiny", dataset.digest)], inputs

    # Searches: MLflow's filter language and order_by.
    def names(runs):
        return [r.info.run_name for r in runs]

    low = names(client.search_runs([exp.experiment_id], "metrics.loss < 1", order_by=["metrics.loss ASC"]))
    by_param = names(client.search_runs([exp.experiment_id], "params.optimizer = 'adam' and tags.owner = 'ana'"))
    failed = names(client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'"))
    deleted = names(client.search_runs([exp.experiment_id], "", run_view_type=ViewType.DELETED_ONLY))
    everyone = names(client.search_runs([exp.experiment_id], "", run_view_type=ViewType.ALL, order_by=["attributes.run_name ASC"]))
    paged = client.search_runs([exp.experiment_id], "", max_results=2, order_by=["attributes.run_name ASC"])
    second = client.search_runs([exp.experiment_id], "", max_results=2, order_by=["attributes.run_name ASC"], page_token=paged.token)
    frame = mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string="metrics.loss >= 0.5")
    assert set(frame["tags.mlflow.runName"]) == {"broken", "late"}, frame
    experiments = [e.name for e in client.search_experiments(filter_string="name LIKE 'mlflow-%'")]

    # The model: registered from the logged model, aliased, loaded by alias.
    version = mlflow.register_model(info.model_uri, "rb-linear")
    assert version.status == "READY", version.status
    client.set_registered_model_alias("rb-linear", "champion", version.version)
    by_alias = client.get_model_version_by_alias("rb-linear", "champion")
    assert by_alias.version == version.version
    loaded = mlflow.pytorch.load_model("models:/rb-linear@champion")
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.allclose(loaded(x), scripted(x))
    model_runs = [o.model_id for o in client.get_run(parent_id).outputs.model_outputs]
    assert model_runs == [info.model_id], model_runs

    out["experiment"] = {"name": exp.name, "tags": {k: v for k, v in client.get_experiment(exp.experiment_id).tags.items() if not k.startswith("mlflow.")}}
    out["parent"] = {
        "status": run.info.status,
        "params": run.data.params,
        "tags": user_tags(run.data.tags),
        "metrics": {k: normal_value(v) for k, v in sorted(run.data.metrics.items())},
        "artifacts": arts,
        "plots": plots,
        "history_lengths": {k: len(client.get_metric_history(parent_id, k)) for k in sorted(run.data.metrics)},
    }
    out["searches"] = {
        "low_loss_by_loss": low,
        "by_param_and_tag": by_param,
        "failed": failed,
        "deleted": deleted,
        "all_by_name": everyone,
        "pages": [names(paged), names(second)],
        "experiments": experiments,
    }
    out["late"] = {"status": client.get_run(finished.info.run_id).info.status, "loss": client.get_run(finished.info.run_id).data.metrics}
    out["registry"] = {"version": version.version, "alias": by_alias.version, "aliases": client.get_registered_model("rb-linear").aliases}

    if args.sql_run:
        # A run logged over SQL is an MLflow run like any other.
        sql_run = client.get_run(args.sql_run)
        assert sql_run.info.status == "FINISHED", sql_run.info.status
        assert sql_run.data.params.get("source") == "sql", sql_run.data.params
        hist = client.get_metric_history(args.sql_run, "loss")
        assert sorted(p.step for p in hist) == [0, 1, 2], hist
        sql_exp = client.get_experiment_by_name(args.sql_experiment)
        found = client.search_runs([sql_exp.experiment_id], "metrics.loss < 0.5")
        assert [r.info.run_id for r in found] == [args.sql_run.replace("-", "")], found
        out["sql_run"] = {"metrics": sql_run.data.metrics}
        print("SQL run seen by MlflowClient")

    with open(args.out, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    print(json.dumps({
        "parent_run_id": parent_id,
        "experiment_id": exp.experiment_id,
        "model_output": float(scripted(x)[0][0]),
    }))


def errors(args):
    base = args.uri + "/api/2.0/mlflow"
    r = requests.get(base + "/experiments/get-by-name", params={"experiment_name": "no-such"})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", r.text
    r = requests.get(base + "/runs/get", params={"run_id": "0" * 32})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", r.text
    r = requests.post(base + "/experiments/create", json={})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    r = requests.post(base + "/experiments/create", data="name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text
    r = requests.post(base + "/experiments/create", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    eid = requests.post(base + "/experiments/create", json={"name": "errors"}).json()["experiment_id"]
    r = requests.post(base + "/experiments/create", json={"name": "errors"})
    assert r.status_code == 400 and r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS", r.text
    run = requests.post(base + "/runs/create", json={"experiment_id": eid, "start_time": 1700000000000}).json()["run"]
    rid = run["info"]["run_id"]
    assert run["info"]["run_uuid"] == rid and len(rid) == 32, run
    assert run["info"]["start_time"] == 1700000000000, run
    too_many = [{"key": f"k{i}", "value": 1.0, "timestamp": 1, "step": 0} for i in range(1001)]
    r = requests.post(base + "/runs/log-batch", json={"run_id": rid, "metrics": too_many})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    r = requests.post(base + "/runs/log-metric", json={"run_id": rid, "key": "m", "value": "not a number", "timestamp": 1})
    assert r.status_code == 400, r.text
    r = requests.post(base + "/runs/log-metric", json={"run_id": rid, "key": "m", "value": 1.0})
    assert r.status_code == 400, r.text
    r = requests.post(base + "/runs/log-metric", json={"run_id": rid, "key": "bad\u0000key", "value": 1.0, "timestamp": 1})
    assert r.status_code == 400, r.text
    r = requests.post(base + "/runs/log-metric", json={"run_id": rid, "key": "m", "value": "NaN", "timestamp": "5", "step": "2"})
    assert r.status_code == 200, r.text
    h = requests.get(base + "/metrics/get-history", params={"run_id": rid, "metric_key": "m"}).json()
    assert h["metrics"] == [{"key": "m", "value": "NaN", "timestamp": 5, "step": 2}], h
    r = requests.get(base + "/metrics/get-history", params={"run_id": rid, "metric_key": "m", "page_token": "zz"})
    assert r.status_code == 400, r.text
    r = requests.post(base + "/runs/search", json={"experiment_ids": [eid], "filter": "metrics.m <"})
    assert r.status_code == 400, r.text
    r = requests.post(base + "/runs/search", json={"experiment_ids": [eid], "filter": "length(run_name) > 1"})
    assert r.status_code == 400, r.text
    r = requests.post(base + "/runs/search", json={"experiment_ids": ["nope"]})
    assert r.status_code == 400, r.text
    r = requests.put(args.uri + "/api/2.0/mlflow-artifacts/artifacts/../escape.txt", data=b"x")
    assert r.status_code in (400, 404), r.text
    r = requests.get(args.uri + "/api/2.0/mlflow-artifacts/artifacts/1/none/artifacts/missing.txt")
    assert r.status_code == 404, r.text
    r = requests.post(base + "/runs/delete", json={"run_id": rid})
    assert r.status_code == 200, r.text
    r = requests.post(base + "/runs/log-metric", json={"run_id": rid, "key": "m", "value": 1.0, "timestamp": 1})
    assert r.status_code == 400, r.text
    # Unknown endpoints: a bare 404, which the client takes as "not supported here".
    r = requests.get(base + "/no/such/endpoint")
    assert r.status_code == 404 and r.text == "", r.text
    r = requests.get(args.uri + "/api/3.0/mlflow/server-info")
    assert r.status_code == 404, r.text
    # Another site's name in Host (DNS rebinding) is refused under open access.
    r = requests.get(base + "/experiments/search", headers={"Host": "evil.example"})
    assert r.status_code == 403, r.text
    print("MLflow error answers as MLflow's")


def auth(args):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    base = args.uri + "/api/2.0/mlflow"
    r = requests.get(base + "/experiments/get-by-name", params={"experiment_name": "Default"})
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED", r.text
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic"), r.headers
    r = requests.get(base + "/experiments/get-by-name", params={"experiment_name": "Default"}, auth=("writer", "wrong"))
    assert r.status_code == 401, r.text
    os.environ["MLFLOW_TRACKING_USERNAME"] = "writer"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = "Writer-Secret-1"
    mlflow.set_tracking_uri(args.uri)
    mlflow.set_experiment("secured")
    with mlflow.start_run(run_name="as-writer") as run:
        for step in range(20):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    assert MlflowClient().get_run(run.info.run_id).info.user_id == "writer"
    os.environ["MLFLOW_TRACKING_USERNAME"] = "viewer"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = "Viewer-Secret-1"
    viewer = MlflowClient(args.uri)
    assert len(viewer.get_metric_history(run.info.run_id, "loss")) == 20
    try:
        viewer.log_metric(run.info.run_id, "loss", 0.0)
        raise AssertionError("the read-only user must not write")
    except MlflowException as e:
        assert e.error_code == "PERMISSION_DENIED", e.error_code
    print(json.dumps({"run_id": run.info.run_id}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["workflow", "errors", "auth"])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--out")
    parser.add_argument("--sql-run")
    parser.add_argument("--sql-experiment")
    args = parser.parse_args()
    {"workflow": workflow, "errors": errors, "auth": auth}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
