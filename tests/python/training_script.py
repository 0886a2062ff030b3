"""What a training script does, through psycopg 3 and nothing else.

Starts a run, logs params, logs metrics every step in a loop, and ends the run, while a
second connection reads runbase.latest_metrics and checks that it sees the run progress
before the run ends. Exits non-zero (with a message) if anything is off.

Usage: python3 training_script.py <conninfo> <steps>
"""

import math
import sys
import threading

import psycopg


def main() -> None:
    conninfo, steps = sys.argv[1], int(sys.argv[2])
    logger = psycopg.connect(conninfo, autocommit=True, application_name="training_script")
    watcher = psycopg.connect(conninfo, autocommit=True)

    run_id = logger.execute(
        "SELECT start_run(%s, %s, %s)", ("py-exp", "py-run", '{"lr": 0.001}')
    ).fetchone()[0]
    logger.execute("SELECT log_params(%s, %s)", (run_id, '{"batch_size": 64, "model": "mlp"}'))
    logger.execute("SELECT set_tag(%s, %s, %s)", (run_id, "framework", "psycopg"))

    seen_steps = []
    step_logged = threading.Event()
    watcher_may_read = threading.Event()
    watcher_done = threading.Event()

    def watch() -> None:
        # Read the latest loss while the run is logging, each time after a step.
        for _ in range(3):
            watcher_may_read.wait(timeout=30)
            watcher_may_read.clear()
            row = watcher.execute(
                "SELECT step FROM runbase.latest_metrics WHERE run_id = %s AND key = 'loss'",
                (run_id,),
            ).fetchone()
            if row is not None:
                seen_steps.append(row[0])
            step_logged.set()
        watcher_done.set()

    t = threading.Thread(target=watch)
    t.start()
    checkpoints = {steps // 4, steps // 2, (3 * steps) // 4}
    for step in range(steps):
        loss = math.exp(-step / steps)
        logger.execute("SELECT log_metric(%s, 'loss', %s, %s)", (run_id, loss, step))
        logger.execute("SELECT log_metric(%s, 'acc', %s, %s)", (run_id, 1.0 - loss, step))
        if step in checkpoints:
            watcher_may_read.set()
            step_logged.wait(timeout=30)
            step_logged.clear()
    t.join(timeout=60)
    if not watcher_done.is_set():
        sys.exit("watcher did not finish")

    # Errors arrive as psycopg exceptions with their SQLSTATE, and the connection goes on.
    try:
        logger.execute("SELECT log_param(%s, 'lr', '0.1')", (run_id,))
        sys.exit("changing a param did not fail")
    except psycopg.errors.UniqueViolation:
        pass

    status = logger.execute("SELECT end_run(%s)", (run_id,)).fetchone()[0]
    if status != "FINISHED":
        sys.exit(f"end_run returned {status!r}")

    # The watcher saw the run progress while it was running.
    if len(seen_steps) != 3 or seen_steps != sorted(seen_steps) or seen_steps[0] >= steps - 1:
        sys.exit(f"watcher saw {seen_steps!r}, expected three increasing steps before the end")

    n = watcher.execute(
        "SELECT count(*) FROM runbase.metrics WHERE run_id = %s AND key = 'loss'", (run_id,)
    ).fetchone()[0]
    if n != steps:
        sys.exit(f"{n} loss points stored, expected {steps}")
    final = watcher.execute(
        "SELECT step, value FROM runbase.latest_metrics WHERE run_id = %s AND key = 'loss'",
        (run_id,),
    ).fetchone()
    if final[0] != steps - 1 or abs(final[1] - math.exp(-(steps - 1) / steps)) > 1e-12:
        sys.exit(f"latest loss is {final!r}")
    params = dict(
        watcher.execute(
            "SELECT key, value FROM runbase.params WHERE run_id = %s", (run_id,)
        ).fetchall()
    )
    if params != {"lr": "0.001", "batch_size": "64", "model": "mlp"}:
        sys.exit(f"params are {params!r}")
    source = watcher.execute(
        "SELECT source, status FROM runbase.runs WHERE run_id = %s", (run_id,)
    ).fetchone()
    if source != ("training_script", "FINISHED"):
        sys.exit(f"run record is {source!r}")

    try:
        logger.execute("SELECT log_metric(%s, 'loss', 1.0)", (run_id,))
        sys.exit("logging to an ended run did not fail")
    except psycopg.errors.ObjectNotInPrerequisiteState:
        pass

    # Bulk logging with COPY, as a fast client would.
    run2 = logger.execute("SELECT start_run('py-exp', 'py-bulk')").fetchone()[0]
    with logger.cursor() as cur:
        with cur.copy("COPY runbase.metrics (run_id, key, step, value) FROM STDIN") as copy:
            for step in range(1000):
                copy.write_row((run2, "loss", step, 1.0 / (step + 1)))
    n = watcher.execute(
        "SELECT count(*) FROM runbase.metrics WHERE run_id = %s", (run2,)
    ).fetchone()[0]
    if n != 1000:
        sys.exit(f"COPY stored {n} points, expected 1000")
    print(f"ok: {steps} steps logged, watcher saw {seen_steps}")


if __name__ == "__main__":
    main()
