"""The dashboard's reads, runbase against MLflow's tracking server, on the same data.

    python3 dashboard_load.py fill-runbase --conninfo C --runs N --points P
    python3 dashboard_load.py fill-mlflow --uri U --runs N --points P
    python3 dashboard_load.py read-runbase --http H --reps R       → JSON line of seconds
    python3 dashboard_load.py read-mlflow --uri U --reps R
    python3 dashboard_load.py browser --http H --conninfo C         → first paint, draw, live

The data: experiment "sweep" with N finished runs, each with params lr and layers and a
metric loss (one point); experiment "big" with one run whose metric "signal" has P points;
in runbase only, with --wide-runs W, experiment "wide" of W runs with --wide-keys metric keys
each (the many-keys case: its column picker and a page sorted by one of the keys).
Reads: one page (50 rows) of the runs table sorted by loss, as each UI asks for it
(runbase: GET /api/v1/experiments/sweep/runs; MLflow: POST runs/search with order_by, as
its UI does); the P-point series for a 1,000-pixel chart (runbase: M4 downsampled to 1,000
buckets; MLflow: get-history-bulk-interval with max_results 1,000, which its UI charts use
and which samples). The browser part (runbase only) measures in headless Chromium.
"""

import argparse
import json
import statistics
import sys
import time
import urllib.request


def get(url, body=None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if body is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def fill_runbase(a):
    import psycopg

    with psycopg.connect(a.conninfo, autocommit=True) as c:
        # One statement: every run started, given its params and loss, and ended.
        c.execute(
            "SELECT log_params(r, '{\"lr\": \"0.01\", \"layers\": \"2\"}'), "
            "log_metric(r, 'loss', random(), 0), end_run(r) FROM "
            "(SELECT start_run('sweep', 'trial-' || CAST(i AS TEXT)) AS r FROM generate_series(1, %d) AS t(i)) s" % int(a.runs)
        ).fetchall()
        run = c.execute("SELECT start_run('big', 'million')").fetchone()[0]
        with c.cursor().copy("COPY runbase.metrics (run_id, key, step, value) FROM STDIN") as copy:
            for i in range(a.points):
                copy.write_row((run, "signal", i, (i % 1000) / 1000.0))
        if a.wide_runs:
            # "wide": runs with --wide-keys metrics each (runbase only: the many-keys case).
            ids = [r[0] for r in c.execute(
                "SELECT start_run('wide', 'w-' || CAST(i AS TEXT)) FROM generate_series(1, %d) AS t(i)"
                % int(a.wide_runs)).fetchall()]
            with c.cursor().copy("COPY runbase.metrics (run_id, key, step, value) FROM STDIN") as copy:
                for n, r in enumerate(ids):
                    for k in range(a.wide_keys):
                        copy.write_row((r, f"m{k:04d}", 0, ((n * 31 + k) % 997) / 997.0))
    print(json.dumps({"run": run}))


def fill_mlflow(a):
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient(a.uri)
    exp = client.create_experiment("sweep")
    now = int(time.time() * 1000)
    for i in range(a.runs):
        r = client.create_run(exp, run_name=f"trial-{i}")
        client.log_batch(r.info.run_id, metrics=[Metric("loss", (i * 7919 % 1000) / 1000.0, now, 0)],
                         params=[Param("lr", "0.01"), Param("layers", "2")])
        client.set_terminated(r.info.run_id)
    big = client.create_run(client.create_experiment("big"), run_name="million")
    batch = []
    for i in range(a.points):
        batch.append(Metric("signal", (i % 1000) / 1000.0, now + i, i))
        if len(batch) == 1000:
            client.log_batch(big.info.run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(big.info.run_id, metrics=batch)
    print(json.dumps({"run": big.info.run_id, "experiment": exp}))


def timed(f, reps):
    f()  # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def read_runbase(a):
    base = a.http + "/api/v1"
    run = get(base + "/experiments/big/runs")["rows"][0][0]
    page = lambda: get(base + "/experiments/sweep/runs?columns=params.lr,metrics.loss&order=metrics.loss&desc=false&limit=50")
    series = lambda: get(base + f"/runs/{run}/metric?key=signal&points=1000")
    check = series()
    assert check["total"] == a.points, check["total"]
    out = {"runs_page": timed(page, a.reps), "series": timed(series, a.reps),
           "series_points": len(check["value"])}
    if a.wide_runs:
        key = f"m{a.wide_keys // 2:04d}"
        keys = lambda: get(base + "/experiments/wide/keys")
        assert len(keys()["metrics"]) == a.wide_keys
        wide = lambda: get(base + f"/experiments/wide/runs?columns=metrics.{key}&order=metrics.{key}&limit=50")
        out["wide_keys"] = timed(keys, a.reps)
        out["wide_page"] = timed(wide, a.reps)
    print(json.dumps(out))


def read_mlflow(a):
    base = a.uri + "/api/2.0/mlflow"
    exps = {e["name"]: e["experiment_id"] for e in get(base + "/experiments/search", {"max_results": 100})["experiments"]}
    run = get(base + "/runs/search", {"experiment_ids": [exps["big"]], "max_results": 1})["runs"][0]["info"]["run_id"]
    page = lambda: get(base + "/runs/search", {"experiment_ids": [exps["sweep"]], "order_by": ["metrics.loss ASC"], "max_results": 50})
    series = lambda: get(base + f"/metrics/get-history-bulk-interval?run_ids={run}&metric_key=signal&max_results=1000")
    check = series()
    print(json.dumps({"runs_page": timed(page, a.reps), "series": timed(series, a.reps),
                      "series_points": len(check.get("metrics", []))}))


def browser(a):
    import os
    import tempfile

    import psycopg
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--user-data-dir=" + tempfile.mkdtemp(prefix="runbase-bench-")]:
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)

    def until(pred, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            v = d.execute_script("return window.__runbase")
            if v and pred(v):
                return v
            time.sleep(0.01)
        raise SystemExit("browser: timed out")

    try:
        paints, draws = [], []
        run = get(a.http + "/api/v1/experiments/big/runs")["rows"][0][0]
        for _ in range(a.reps + 1):
            d.get(a.http + "/experiments/sweep?columns=params.lr,metrics.loss&order=metrics.loss&desc=false")
            until(lambda s: s.get("ready") and s.get("rows"))
            paints.append(d.execute_script("return performance.now()") / 1000.0)
            d.get(a.http + f"/runs/{run}")
            s = until(lambda s: s.get("charts", {}).get("signal"))
            draws.append(s["charts"]["signal"]["drawMs"] / 1000.0)
        with psycopg.connect(a.conninfo, autocommit=True) as c:
            live = c.execute("SELECT start_run('live', 'latency')").fetchone()[0]
            c.execute("SELECT log_metric(%s, 'x', 0.0, 0)", (live,))
            d.get(a.http + f"/runs/{live}")
            until(lambda s: s.get("charts", {}).get("x"))
            lat = []
            for step in range(1, a.reps * 4 + 1):
                before = d.execute_script("return window.__runbase.charts.x.points")
                c.execute("SELECT log_metric(%s, 'x', %s, %s)", (live, float(step), step))
                t = time.perf_counter()
                until(lambda s: s["charts"]["x"]["points"] > before, timeout=10)
                lat.append(time.perf_counter() - t)
        print(json.dumps({"first_paint": statistics.median(paints[1:]), "draw": statistics.median(draws[1:]),
                          "live": statistics.median(lat), "live_worst": max(lat)}))
    finally:
        d.quit()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fill-runbase", "fill-mlflow", "read-runbase", "read-mlflow", "browser"])
    p.add_argument("--conninfo")
    p.add_argument("--uri")
    p.add_argument("--http")
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--wide-runs", type=int, default=0)
    p.add_argument("--wide-keys", type=int, default=1000)
    a = p.parse_args()
    {"fill-runbase": fill_runbase, "fill-mlflow": fill_mlflow, "read-runbase": read_runbase,
     "read-mlflow": read_mlflow, "browser": browser}[a.mode](a)
    sys.stdout.flush()
