"""The MLflow comparison's client side: log the same run to MLflow or to runbase.

Both sides do the same logical work from the same Python process type:
- `run`: start a run with 10 params, set a tag, end it (one run's bookkeeping);
- `single`: N metric points, one synchronous call each (MLflow `log_metric`, runbase
  `SELECT log_metric(...)` through psycopg 3 in autocommit);
- `batch`: P points in calls of B points each (MLflow `log_batch`, whose limit is 1,000
  metrics per call; runbase one `INSERT INTO runbase.metrics ... unnest(...)` per call);
- `history`: read back one metric's whole history (MLflow `get_metric_history`, runbase
  `SELECT step, value FROM runbase.metrics WHERE run_id = ... AND key = ...`).

Each phase is timed from its first call to the last acknowledgement; imports and
connecting are outside the timings. Prints one JSON line of seconds per phase and checks
that what was logged reads back complete.

With the MLflow client (against `mlflow server` or runbase's MLflow API) two more phases
can run: `history_long` (`--history-points H`: one metric of H points read back, paged by
the client) and `search` (`--search-runs N`: N runs, then every run with acc > 0.5 by
search_runs, best first, 1,000 per page).

usage: tracking_log.py mlflow --uri http://127.0.0.1:PORT --single N --batch-points P
           [--history-points H] [--search-runs N]
       tracking_log.py runbase --conninfo "host=... port=..." --single N --batch-points P
"""

import argparse
import json
import time


def params():
    return {f"param_{i}": str(i * 0.1) for i in range(10)}


def batch_points(total, start_step):
    # Deterministic values; keys rotate over 10 names like a training loop's metrics.
    return [
        (f"metric_{i % 10}", start_step + i // 10, 1.0 / (i + 1)) for i in range(total)
    ]


def run_mlflow(args):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.uri)
    name = f"bench-{time.time_ns()}"
    experiment_id = client.create_experiment(name)
    out = {}

    t = time.perf_counter()
    run = client.create_run(experiment_id, run_name="bookkeeping")
    rid = run.info.run_id
    for k, v in params().items():
        client.log_param(rid, k, v)
    client.set_tag(rid, "phase", "bench")
    client.set_terminated(rid)
    out["run"] = time.perf_counter() - t

    run = client.create_run(experiment_id, run_name="metrics")
    rid = run.info.run_id
    t = time.perf_counter()
    for step in range(args.single):
        client.log_metric(rid, "loss", 1.0 / (step + 1), step=step)
    out["single"] = time.perf_counter() - t

    points = batch_points(args.batch_points, 0)
    now = int(time.time() * 1000)
    t = time.perf_counter()
    for i in range(0, len(points), args.batch_size):
        chunk = points[i : i + args.batch_size]
        client.log_batch(rid, metrics=[Metric(k, v, now, s) for k, s, v in chunk])
    out["batch"] = time.perf_counter() - t

    t = time.perf_counter()
    history = client.get_metric_history(rid, "loss")
    out["history"] = time.perf_counter() - t
    assert len(history) == args.single, (len(history), args.single)
    n = len(client.get_metric_history(rid, "metric_0"))
    assert n == args.batch_points // 10, (n, args.batch_points)

    if args.history_points:
        # A long history, logged untimed, read back through the client's paging.
        for start in range(0, args.history_points, 1000):
            end = min(start + 1000, args.history_points)
            client.log_batch(rid, metrics=[Metric("long", float(s), now, s) for s in range(start, end)])
        t = time.perf_counter()
        long = client.get_metric_history(rid, "long")
        out["history_long"] = time.perf_counter() - t
        assert len(long) == args.history_points, (len(long), args.history_points)
    client.set_terminated(rid)

    if args.search_runs:
        # N runs (untimed), then every run with acc > 0.5, best first, page by page.
        searched = client.create_experiment(name + "-search")
        for i in range(args.search_runs):
            r = client.create_run(searched, run_name=f"trial-{i}", tags={"family": "bench"})
            client.log_batch(
                r.info.run_id,
                metrics=[Metric("acc", (i % 1000) / 1000.0, now, 0)],
                params=[Param("lr", str(i % 7))],
            )
        t = time.perf_counter()
        found, token = [], None
        while True:
            page = client.search_runs(
                [searched], "metrics.acc > 0.5", order_by=["metrics.acc DESC"],
                max_results=1000, page_token=token,
            )
            found.extend(page)
            token = page.token
            if not token:
                break
        out["search"] = time.perf_counter() - t
        want = sum(1 for i in range(args.search_runs) if (i % 1000) / 1000.0 > 0.5)
        assert len(found) == want, (len(found), want)
    return out


def run_runbase(args):
    import psycopg

    conn = psycopg.connect(args.conninfo, autocommit=True)
    cur = conn.cursor()
    name = f"bench-{time.time_ns()}"
    out = {}

    t = time.perf_counter()
    cur.execute("SELECT start_run(%s, %s)", (name, "bookkeeping"))
    rid = cur.fetchone()[0]
    for k, v in params().items():
        cur.execute("SELECT log_param(%s, %s, %s)", (rid, k, v))
    cur.execute("SELECT set_tag(%s, 'phase', 'bench')", (rid,))
    cur.execute("SELECT end_run(%s)", (rid,))
    out["run"] = time.perf_counter() - t

    cur.execute("SELECT start_run(%s, %s)", (name, "metrics"))
    rid = cur.fetchone()[0]
    t = time.perf_counter()
    for step in range(args.single):
        cur.execute("SELECT log_metric(%s, 'loss', %s, %s)", (rid, 1.0 / (step + 1), step))
    out["single"] = time.perf_counter() - t

    points = batch_points(args.batch_points, 0)
    t = time.perf_counter()
    for i in range(0, len(points), args.batch_size):
        chunk = points[i : i + args.batch_size]
        cur.execute(
            "INSERT INTO runbase.metrics (run_id, key, step, value) "
            "SELECT %s, k, s, v FROM unnest(%s::text[], %s::bigint[], %s::float8[]) AS t(k, s, v)",
            (rid, [p[0] for p in chunk], [p[1] for p in chunk], [p[2] for p in chunk]),
        )
    out["batch"] = time.perf_counter() - t

    t = time.perf_counter()
    cur.execute(
        "SELECT step, value FROM runbase.metrics WHERE run_id = %s AND key = 'loss'", (rid,)
    )
    history = cur.fetchall()
    out["history"] = time.perf_counter() - t
    assert len(history) == args.single, (len(history), args.single)
    cur.execute(
        "SELECT count(*) FROM runbase.metrics WHERE run_id = %s AND key = 'metric_0'", (rid,)
    )
    n = cur.fetchone()[0]
    assert n == args.batch_points // 10, (n, args.batch_points)
    cur.execute("SELECT end_run(%s)", (rid,))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=["mlflow", "runbase"])
    p.add_argument("--uri", default="")
    p.add_argument("--conninfo", default="")
    p.add_argument("--single", type=int, default=1000)
    p.add_argument("--batch-points", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--history-points", type=int, default=0)
    p.add_argument("--search-runs", type=int, default=0)
    args = p.parse_args()
    out = run_mlflow(args) if args.system == "mlflow" else run_runbase(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
