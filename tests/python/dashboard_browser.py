"""Drives the dashboard in a real headless Chromium (Debian's chromium and chromedriver,
through Selenium) against a running runbase server, with data logged over pgwire by
psycopg. Asserts on page state (window.__runbase, the DOM); screenshots are secondary.

    python3 dashboard_browser.py trust --http http://127.0.0.1:P --pg "host=… port=…" [--screenshots DIR]
    python3 dashboard_browser.py scram --http … --pg … (users admin, viewer and writer exist)

Exits non-zero with a message on the first failed check.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request

import psycopg
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

os.environ.setdefault("SE_OFFLINE", "true")


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1280,900", "--force-device-scale-factor=1", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--user-data-dir=" + tempfile.mkdtemp(prefix="runbase-chromium-"),
    ]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def state(d):
    return d.execute_script("return window.__runbase")


def wait(d, what, pred, timeout=20.0):
    """Polls pred(state) until it is truthy; returns its value."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = state(d)
        try:
            v = pred(last or {})
        except (KeyError, TypeError):
            v = None
        if v:
            return v
        time.sleep(0.05)
    logs = d.get_log("browser")
    raise AssertionError(f"timed out waiting for {what}; page state: {json.dumps(last)[:2000]}; console: {logs[-10:]}")


def load(d, url, what="page"):
    d.get(url)
    wait(d, what + " ready", lambda s: s.get("ready"))
    if "/runs/" in url:
        # The page's event stream is subscribed (its `ready` event came).
        wait(d, what + " live", lambda s: s.get("live"))
    s = state(d)
    check(not s.get("errors"), f"{url}: errors on the page: {s.get('errors')}")
    return s


def click(d, css, timeout=10.0):
    """Clicks the element `css` selects, again if a refresh replaced it in between."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.time() + timeout
    while True:
        try:
            d.find_element(By.CSS_SELECTOR, css).click()
            return
        except (StaleElementReferenceException, NoSuchElementException):
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def shot(d, args, name):
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)
        d.save_screenshot(os.path.join(args.screenshots, name))


def make_sweep(conn, experiment, n):
    """n finished runs with params lr, layers and metrics loss (per step) and acc."""
    runs = []
    with conn.cursor() as cur:
        for i in range(n):
            lr = ["0.1", "0.01", "0.001"][i % 3]
            cur.execute("SELECT start_run(%s, %s)", (experiment, f"trial-{i:02d}"))
            run = cur.fetchone()[0]
            cur.execute("SELECT log_param(%s, 'lr', %s)", (run, lr))
            cur.execute("SELECT log_param(%s, 'layers', %s)", (run, str(1 + i % 4)))
            for step in range(20):
                cur.execute("SELECT log_metric(%s, 'loss', %s, %s)", (run, 1.0 / (step + 1) + i * 0.01, step))
            cur.execute("SELECT log_metric(%s, 'acc', %s, 19)", (run, 0.5 + i * 0.02))
            cur.execute("SELECT end_run(%s)", (run,))
            runs.append((run, lr, 1.0 / 20 + i * 0.01))
    return runs


def load_iris(conn):
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "data", "iris.csv")
    with open(path) as f:
        header = f.readline().strip().split(",")
        body = f.read()
    cols = ", ".join(f"{c} text" if c == "species" else f"{c} double precision" for c in header)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE iris ({cols})")
        with cur.copy(f"COPY iris ({', '.join(header)}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(body)


TRAIN = ("SELECT run_id FROM train('iris_live', $$SELECT * FROM iris$$, 'species', "
         "'{\"epochs\": 100000, \"batch_size\": 1, \"max_seconds\": %d, \"seed\": 7}')")


def start_training(dsn, seconds):
    """Runs TRAIN on another connection in a thread; returns (thread, outcome dict)."""
    outcome = {}

    def go():
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                outcome["row"] = c.execute(TRAIN % seconds).fetchone()
        except Exception as e:  # the cancel ends it with an error: record it
            outcome["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, outcome


def running_job(conn, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = conn.execute("SELECT run_id FROM runbase.jobs WHERE state = 'training'").fetchone()
        if row:
            return row[0]
        time.sleep(0.1)
    raise AssertionError("no training showed up in runbase.jobs")


def http_json(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def trust(args):
    conn = psycopg.connect(args.pg, autocommit=True)
    d = browser()
    try:
        # --- runs table: sort by a metric, filter by a param ---
        runs = make_sweep(conn, "sweep", 12)
        base = f"{args.http}/experiments/sweep"
        s = load(d, base + "?columns=params.lr,metrics.loss&order=metrics.loss&desc=false", "runs table")
        t = s["table"]
        li = t["columns"].index("metrics.loss")
        losses = [r[li] for r in t["rows"]]
        check(len(losses) == 12, f"12 runs shown, got {len(losses)}")
        check(losses == sorted(losses), f"sorted by loss ascending: {losses}")
        # Clicking the loss header sorts the other way (an ordinary link: new URL).
        d.find_element(By.LINK_TEXT, "metrics.loss ▲").click()
        wait(d, "resorted", lambda s: s.get("table") and s["table"]["desc"] is True)
        losses = [r[li] for r in state(d)["table"]["rows"]]
        check(losses == sorted(losses, reverse=True), f"sorted by loss descending: {losses}")
        check("desc=true" in d.current_url, d.current_url)
        # Filter by a param through the filter box.
        box = d.find_element(By.ID, "filter")
        box.clear()
        box.send_keys("params.lr = '0.1'")
        d.find_element(By.ID, "filter-form").submit()
        wait(d, "filtered", lambda s: s.get("ready") and s.get("total") == 4)
        t = state(d)["table"]
        lr = t["columns"].index("params.lr")
        check(all(r[lr] == "0.1" for r in t["rows"]) and len(t["rows"]) == 4, f"only lr=0.1: {t['rows']}")
        # The back button returns to the unfiltered table.
        d.back()
        wait(d, "back", lambda s: s.get("ready") and s.get("total") == 12)
        # A bad filter is a clear error, not a crash.
        load_err = d.get(base + "?filter=" + urllib.parse.quote("params.lr = = 1"))
        wait(d, "filter error", lambda s: s.get("errors"))
        check("invalid_argument" in state(d)["errors"][0], state(d)["errors"])

        # --- compare: select three runs, open the compare view ---
        load(d, base + "?columns=params.lr", "runs table")
        boxes = d.find_elements(By.CSS_SELECTOR, "input[data-run]")[:3]
        for b in boxes:
            b.click()
        link = d.find_element(By.ID, "compare")
        check(link.text == "Compare selected (3)", link.text)
        link.click()
        s = wait(d, "compare drawn", lambda s: s.get("page") == "compare" and s.get("ready") and s)
        check(s["charts"]["loss"]["series"] == 3, f"3 runs overlaid: {s['charts']}")
        check(s["parallel"] == 3 and s["scatter"] == 3, f"parallel coordinates and scatter of 3: {s}")

        # --- a 1M-point series draws, downsampled on the server, spikes kept ---
        run = conn.execute("SELECT start_run('big', 'million')").fetchone()[0]
        with conn.cursor() as cur:
            with cur.copy("COPY runbase.metrics (run_id, key, step, value) FROM STDIN") as copy:
                for i in range(1_000_000):
                    copy.write_row((run, "signal", i, 1000.0 if i == 654_321 else (i % 1000) / 1000.0))
        s = load(d, f"{args.http}/runs/{run}", "run page")
        c = wait(d, "1M chart", lambda s: s["charts"].get("signal"))
        check(0 < c["points"] <= 4 * 1000, f"downsampled to the chart's width: {c}")
        peak = d.execute_script("return Math.max(...window.__runbase_peek('signal'))")
        check(peak == 1000.0, f"the spike survives downsampling: {peak}")
        print(f"1M-point series: {c['points']} points drawn in {c['drawMs']:.1f} ms")
        outcome = d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.__runbase.zoom('signal', 1000, 1500).then(() => done('ok'), (e) => done(String(e)))")
        check(outcome == "ok", f"zoom: {outcome}")
        c = state(d)["charts"]["signal"]
        check(c["zoomed"] and c["points"] == 501, f"a zoomed range comes back at full resolution: {c}")

        # --- live: a TRAIN started over pgwire; its chart gains epochs without reload ---
        load_iris(conn)
        thread, outcome = start_training(args.pg, 120)
        run = running_job(conn)
        load(d, f"{args.http}/runs/{run}", "train run page")
        d.execute_script("window.__marker = 'same page'")
        first = wait(d, "val_loss chart", lambda s: s["charts"].get("val_loss") and s["charts"]["val_loss"]["points"])
        wait(d, "more epochs", lambda s: s["charts"]["val_loss"]["points"] >= first + 3, timeout=60)
        check(d.execute_script("return window.__marker") == "same page", "the page was not reloaded")
        if args.screenshots:
            wait(d, "a longer curve", lambda s: s["charts"]["val_loss"]["points"] >= 40, timeout=120)
            shot(d, args, "run-page.png")
        # Live latency: a point logged over pgwire until it is on the chart.
        ext = conn.execute("SELECT start_run('live', 'latency')").fetchone()[0]
        conn.execute("SELECT log_metric(%s, 'x', 1.0, 0)", (ext,))
        load(d, f"{args.http}/runs/{ext}", "live run page")
        worst = 0.0
        for step in range(1, 11):
            before = state(d)["charts"]["x"]["points"]
            t0 = time.time()
            conn.execute("SELECT log_metric(%s, 'x', %s, %s)", (ext, float(step), step))
            wait(d, "live point", lambda s: s["charts"]["x"]["points"] > before, timeout=5)
            worst = max(worst, time.time() - t0)
        check(worst < 1.0, f"points show within 1 s: worst {worst:.3f} s")
        print(f"live latency (log_metric returned → point on the chart): worst of 10 {worst * 1000:.0f} ms")

        # --- jobs: the cancel button stops the TRAIN; the run page shows KILLED live ---
        load(d, f"{args.http}/jobs", "jobs")
        wait(d, "a job row", lambda s: s.get("rows", 0) >= 1)
        click(d, "button.cancel")
        thread.join(60)
        check(not thread.is_alive(), "TRAIN ended after cancel")
        check("error" in outcome, f"TRAIN was cancelled: {outcome}")
        status = conn.execute("SELECT status FROM runbase.runs WHERE run_id = %s", (run,)).fetchone()[0]
        check(status == "KILLED", f"cancelled TRAIN run is KILLED: {status}")

        # Alert events show on the run page.
        conn.execute("""SELECT create_alert('too_high', '{"kind": "threshold", "metric": "x", "above": 5, "experiment": "live"}')""")
        conn.execute("SELECT log_metric(%s, 'x', 99.0, 100)", (ext,))
        s = load(d, f"{args.http}/runs/{ext}", "run page with an alert")
        check(s["alerts"] == 1 and "too_high" in d.find_element(By.ID, "alerts").text, f"alert shown: {s}")

        # Status changes show without reload.
        st = conn.execute("SELECT start_run('live', 'status')").fetchone()[0]
        load(d, f"{args.http}/runs/{st}", "status run page")
        conn.execute("SELECT end_run(%s, 'FAILED')", (st,))
        wait(d, "status FAILED", lambda s: s.get("status") == "FAILED", timeout=5)
        check("FAILED" in d.find_element(By.TAG_NAME, "h1").text, "status in the heading")

        # --- the other pages render ---
        s = load(d, f"{args.http}/", "experiments")
        check(s["rows"] >= 4, f"experiments listed: {s}")
        s = load(d, f"{args.http}/models", "models")
        s = load(d, f"{args.http}/tables", "tables")
        check(s["rows"] >= 1, "iris listed")
        s = load(d, f"{args.http}/tables/iris", "table")
        check(s["rows"] == 100, f"preview rows: {s}")
        # The lineage link of a TRAIN run opens the table at the version it read.
        s = load(d, f"{args.http}/tables/iris?version=1", "table at a version")
        check(s["rows"] == 100 and "version 1" in d.find_element(By.TAG_NAME, "h1").text, f"at version 1: {s}")
        q = urllib.parse.quote("SELECT step, value FROM runbase.metrics WHERE key = 'loss' ORDER BY step LIMIT 50")
        s = load(d, f"{args.http}/query?sql={q}", "query")
        check(s["chart"]["x"] == "step" and s["chart"]["points"] == 50, f"query chart: {s}")
        q = urllib.parse.quote("DROP TABLE iris")
        d.get(f"{args.http}/query?sql={q}")
        wait(d, "read-only refusal", lambda s: s.get("errors"))
        check(conn.execute("SELECT count(*) FROM iris").fetchone()[0] == 150, "iris is still there")
        print("trust: all dashboard checks passed")
    finally:
        d.quit()
        conn.close()


def login(d, args, user, password, next_path=None):
    d.get(f"{args.http}/login" + (f"?next={next_path}" if next_path else ""))
    wait(d, "login page", lambda s: s.get("ready"))
    d.find_element(By.ID, "user").send_keys(user)
    d.find_element(By.ID, "password").send_keys(password)
    d.find_element(By.ID, "login").click()
    wait(d, "logged in", lambda s: s.get("role"))


def scram(args):
    admin = psycopg.connect(args.pg + " user=admin password=Admin-Secret-1", autocommit=True)
    make_sweep(admin, "secure", 2)
    load_iris(admin)
    d = browser()
    try:
        # Without a login, pages send the browser to the login page; the API answers 401.
        d.get(f"{args.http}/experiments/secure")
        wait(d, "redirect to login", lambda s: s.get("page") == "login" and s.get("ready"))
        check("/login?next=" in d.current_url, d.current_url)
        try:
            http_json(f"{args.http}/api/v1/experiments")
            raise AssertionError("the API answered without a login")
        except urllib.error.HTTPError as e:
            check(e.code == 401, f"401 without login, got {e.code}")
        # A wrong password is refused.
        d.find_element(By.ID, "user").send_keys("viewer")
        d.find_element(By.ID, "password").send_keys("wrong")
        d.find_element(By.ID, "login").click()
        deadline = time.time() + 10
        while not d.find_elements(By.CLASS_NAME, "error") and time.time() < deadline:
            time.sleep(0.05)
        check("wrong user name or password" in d.find_element(By.CLASS_NAME, "error").text, "refused")

        thread, outcome = start_training(args.pg + " user=admin password=Admin-Secret-1", 60)
        run = running_job(admin)
        # The read-only user sees the job and no cancel button.
        # ?next= only ever leads somewhere on this server (/\evil.example is //evil.example).
        login(d, args, "viewer", "Viewer-Secret-1", next_path="/%5Cevil.example/")
        check(d.current_url.startswith(args.http + "/"), f"stayed on the server: {d.current_url}")
        check(state(d)["role"] == "readonly", state(d))
        load(d, f"{args.http}/jobs", "jobs")
        wait(d, "a job row", lambda s: s.get("rows", 0) >= 1)
        check(not d.find_elements(By.CSS_SELECTOR, "button.cancel"), "no cancel button for read-only")
        # …and the API refuses it a cancel even with the CSRF token.
        cookie = d.get_cookie("runbase_session")
        check(cookie and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict", f"cookie flags: {cookie}")
        status = d.execute_script(
            "return fetch('/api/v1/jobs/' + arguments[0] + '/cancel', {method: 'POST', headers: {'x-csrf-token': arguments[1]}}).then(r => r.status)",
            run, state(d)["csrf"] if "csrf" in state(d) else "")
        check(status in (403,), f"read-only cancel refused: {status}")
        # Without the CSRF token, even a writer's POST is refused.
        d.find_element(By.ID, "logout").click()
        deadline = time.time() + 10
        while "/login" not in d.current_url and time.time() < deadline:
            time.sleep(0.05)
        login(d, args, "writer", "Writer-Secret-1")
        status = d.execute_script(
            "return fetch('/api/v1/jobs/' + arguments[0] + '/cancel', {method: 'POST'}).then(r => r.status)", run)
        check(status == 403, f"POST without CSRF token refused: {status}")
        load(d, f"{args.http}/jobs", "jobs")
        wait(d, "a job row", lambda s: s.get("rows", 0) >= 1)
        click(d, "button.cancel")
        thread.join(60)
        check("error" in outcome, f"TRAIN cancelled by the writer: {outcome}")
        s = load(d, f"{args.http}/experiments/secure", "runs table")
        check(s["total"] == 2, s)
        print("scram: all dashboard checks passed")
    finally:
        d.quit()
        admin.close()


if __name__ == "__main__":
    import urllib.error
    import urllib.parse

    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["trust", "scram"])
    p.add_argument("--http", required=True)
    p.add_argument("--pg", required=True)
    p.add_argument("--screenshots")
    a = p.parse_args()
    try:
        {"trust": trust, "scram": scram}[a.scenario](a)
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
