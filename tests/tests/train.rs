//! TRAIN end to end against the real `runbase` binary: quality on scikit-learn's datasets
//! (shipped as CSV in tests/data), live per-epoch metrics and NOTICE progress, the model
//! registry, reproducibility and `reproduce`, search with child runs, cancellation, and
//! errors for bad input while other clients keep being served.

use std::process::Command;
use std::time::{Duration, Instant};

use runbase_tests::client::{data_file, load_csv, scalar, sqlstate};
use runbase_tests::server::TestServer;
use tokio_postgres::Client;

/// Runs a TRAIN statement; returns (run_id, version, metrics JSON, epochs, best_epoch).
async fn train(client: &Client, sql: &str) -> (String, i64, serde_json::Value, i32, i32) {
    let row = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let metrics: String = row.get("metrics");
    (
        row.get("run_id"),
        row.get("version"),
        serde_json::from_str(&metrics).expect("metrics JSON"),
        row.get("epochs"),
        row.get("best_epoch"),
    )
}

/// Waits (up to a minute) until `runbase.jobs` lists a training at `epoch` or later;
/// returns its run id and epoch.
async fn wait_for_epoch(client: &Client, epoch: i64) -> (String, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "no training reached epoch {epoch}"
        );
        let rows = client
            .query(
                "SELECT run_id, epoch FROM runbase.jobs WHERE epoch >= $1",
                &[&epoch],
            )
            .await
            .expect("jobs");
        if let Some(r) = rows.first() {
            return (r.get(0), r.get(1));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 30 s) until run `run_id` is KILLED; until then it must be RUNNING.
async fn wait_until_killed(client: &Client, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String = scalar(
            client,
            "SELECT status FROM runbase.runs WHERE run_id = $1",
            &[&run_id],
        )
        .await;
        if status == "KILLED" {
            return;
        }
        assert_eq!(status, "RUNNING");
        assert!(Instant::now() < deadline, "the run was not killed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn history(client: &Client, run_id: &str, key: &str) -> Vec<f64> {
    client
        .query(
            "SELECT value FROM runbase.metrics WHERE run_id = $1 AND key = $2 ORDER BY step",
            &[&run_id, &key],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_models_meet_scikit_learn_quality_on_held_out_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    load_csv(&c, "iris", "iris", "species", "text").await;
    load_csv(&c, "wine", "wine", "cultivar", "bigint").await;
    load_csv(&c, "breast_cancer", "cancer", "diagnosis", "text").await;
    load_csv(
        &c,
        "diabetes",
        "diabetes",
        "progression",
        "double precision",
    )
    .await;

    // (model, table, target, options, metric, bar) — bars from scikit-learn baselines.
    let cases = [
        (
            "iris",
            "iris",
            "species",
            r#"{"epochs": 80, "learning_rate": 0.01, "seed": 1}"#,
            "accuracy",
            0.90,
        ),
        (
            "wine",
            "wine",
            "cultivar",
            r#"{"epochs": 60, "learning_rate": 0.01, "seed": 1}"#,
            "accuracy",
            0.90,
        ),
        (
            "cancer",
            "cancer",
            "diagnosis",
            r#"{"epochs": 40, "learning_rate": 0.005, "seed": 1}"#,
            "accuracy",
            0.94,
        ),
        (
            "diabetes",
            "diabetes",
            "progression",
            r#"{"model": "linear", "epochs": 200, "learning_rate": 0.01, "seed": 1}"#,
            "r2",
            0.40,
        ),
    ];
    for (model, table, target, options, metric, bar) in cases {
        let (run_id, version, metrics, epochs, best) = train(
            &c,
            &format!(
                "SELECT * FROM train('{model}', $$SELECT * FROM {table}$$, '{target}', '{options}')"
            ),
        )
        .await;
        let value = metrics[metric].as_f64().expect("metric");
        assert!(
            value >= bar,
            "{model}: {metric} = {value} < {bar}: {metrics}"
        );
        assert_eq!(version, 1);
        assert!(best >= 1 && best <= epochs, "{best} of {epochs}");
        // Every epoch's metrics were logged, under the run, which is a finished TRAIN run.
        let val = history(&c, &run_id, "val_loss").await;
        assert_eq!(val.len(), epochs as usize, "{model}");
        let row = c
            .query_one(
                "SELECT status, kind, experiment FROM runbase.runs WHERE run_id = $1",
                &[&run_id],
            )
            .await
            .expect("run");
        assert_eq!(row.get::<_, String>(0), "FINISHED");
        assert_eq!(row.get::<_, String>(1), "train");
        assert_eq!(row.get::<_, String>(2), model);
        // The query's table version was recorded.
        let inputs = c
            .query_one(
                "SELECT table_name, table_version FROM runbase.run_inputs WHERE run_id = $1",
                &[&run_id],
            )
            .await
            .expect("inputs");
        assert_eq!(inputs.get::<_, String>(0), table);
        assert_eq!(inputs.get::<_, i64>(1), 1);
    }
    // The registry lists each model with its task, inputs and metrics.
    let rows = c
        .query(
            "SELECT name, version, task, target, CAST(array_length(input_columns, 1) AS int), size_bytes FROM runbase.models ORDER BY name",
            &[],
        )
        .await
        .expect("models");
    let got: Vec<(String, i64, String, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "cancer".into(),
                1,
                "classification".into(),
                "diagnosis".into(),
                30
            ),
            (
                "diabetes".into(),
                1,
                "regression".into(),
                "progression".into(),
                10
            ),
            (
                "iris".into(),
                1,
                "classification".into(),
                "species".into(),
                4
            ),
            (
                "wine".into(),
                1,
                "classification".into(),
                "cultivar".into(),
                13
            ),
        ]
    );
    assert!(rows.iter().all(|r| r.get::<_, i64>(5) > 0));
    // A second TRAIN of a name is its next version.
    let (_, version, ..) = train(
        &c,
        "SELECT * FROM train('iris', 'SELECT * FROM iris', 'species', '{\"epochs\": 5}')",
    )
    .await;
    assert_eq!(version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_losses_and_reproduce_reads_the_pinned_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    load_csv(&c, "iris", "iris", "species", "text").await;
    let sql = "SELECT * FROM train('iris', $$SELECT * FROM iris$$, 'species', \
               '{\"epochs\": 15, \"hidden_layers\": [16, 8], \"dropout\": 0.1, \"seed\": 42}')";
    let (first, ..) = train(&c, sql).await;
    let (second, ..) = train(&c, sql).await;
    let a = history(&c, &first, "train_loss").await;
    let b = history(&c, &second, "train_loss").await;
    assert_eq!(a.len(), 15);
    assert_eq!(a, b, "same data, options and seed give the same losses");
    assert_eq!(
        history(&c, &first, "val_loss").await,
        history(&c, &second, "val_loss").await
    );
    let other = train(
        &c,
        "SELECT * FROM train('iris', $$SELECT * FROM iris$$, 'species', '{\"epochs\": 15, \"hidden_layers\": [16, 8], \"dropout\": 0.1, \"seed\": 43}')",
    )
    .await
    .0;
    assert_ne!(
        history(&c, &other, "train_loss").await,
        a,
        "another seed differs"
    );

    // New rows make a new table version; reproduce still reads the version the run read.
    c.batch_execute("INSERT INTO iris SELECT * FROM iris WHERE species = 'setosa'")
        .await
        .expect("insert");
    let row = c
        .query_one(
            &format!("SELECT run_id, version FROM reproduce('{first}')"),
            &[],
        )
        .await
        .expect("reproduce");
    let again: String = row.get(0);
    assert_ne!(again, first);
    assert_eq!(row.get::<_, i64>(1), 4);
    assert_eq!(history(&c, &again, "train_loss").await, a);
    let inputs: i64 = scalar(
        &c,
        "SELECT table_version FROM runbase.run_inputs WHERE run_id = $1",
        &[&again],
    )
    .await;
    assert_eq!(inputs, 1);
    let tag: String = scalar(
        &c,
        "SELECT value FROM runbase.tags WHERE run_id = $1 AND key = 'reproduces'",
        &[&again],
    )
    .await;
    assert_eq!(tag, first);
    // A fresh TRAIN reads the new version.
    let fresh = train(&c, sql).await.0;
    let v: i64 = scalar(
        &c,
        "SELECT table_version FROM runbase.run_inputs WHERE run_id = $1",
        &[&fresh],
    )
    .await;
    assert_eq!(v, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_runs_each_trial_as_a_child_run_and_keeps_the_best() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    load_csv(&c, "wine", "wine", "cultivar", "bigint").await;
    let (parent, version, metrics, ..) = train(
        &c,
        r#"SELECT * FROM train('wine', 'SELECT * FROM wine', 'cultivar', '{"epochs": 20, "seed": 3, "early_stopping": {"monitor": "accuracy", "patience": 50}, "search": {"space": {"learning_rate": [0.0001, 0.01], "hidden_layers": [[8], [32, 16]]}}}')"#,
    )
    .await;
    assert_eq!(version, 1);
    let children = c
        .query(
            "SELECT run_id, status FROM runbase.runs WHERE parent_run_id = $1",
            &[&parent],
        )
        .await
        .expect("children");
    assert_eq!(children.len(), 4);
    assert!(children.iter().all(|r| r.get::<_, String>(1) == "FINISHED"));
    let best: String = scalar(
        &c,
        "SELECT value FROM runbase.tags WHERE run_id = $1 AND key = 'best_trial_run_id'",
        &[&parent],
    )
    .await;
    // The winner has the highest final accuracy of the four.
    let best_acc: f64 = scalar(
        &c,
        "SELECT max(value) FROM runbase.metrics WHERE run_id = $1 AND key = 'accuracy'",
        &[&best],
    )
    .await;
    let all_best: f64 = scalar(
        &c,
        "SELECT max(m.value) FROM runbase.metrics m JOIN runbase.runs r ON m.run_id = r.run_id \
             WHERE r.parent_run_id = $1 AND m.key = 'accuracy'",
        &[&parent],
    )
    .await;
    assert_eq!(best_acc, all_best);
    assert_eq!(metrics["accuracy"].as_f64(), Some(best_acc));
    // Each trial records its own options.
    let lrs = c
        .query(
            "SELECT p.value FROM runbase.params p JOIN runbase.runs r ON p.run_id = r.run_id \
             WHERE r.parent_run_id = $1 AND p.key = 'learning_rate' ORDER BY 1",
            &[&parent],
        )
        .await
        .expect("params");
    let lrs: Vec<String> = lrs.iter().map(|r| r.get(0)).collect();
    assert_eq!(lrs, ["0.0001", "0.0001", "0.01", "0.01"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halving_search_continues_only_the_best_trials_at_each_rung() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    load_csv(&c, "wine", "wine", "cultivar", "bigint").await;
    // 9 candidates, eta 3, 27 epochs: 9 train 3 epochs, the best 3 go on to 9, the best one to 27.
    let (parent, version, metrics, epochs, _) = train(
        &c,
        r#"SELECT * FROM train('wine', 'SELECT * FROM wine', 'cultivar', '{"epochs": 27, "seed": 3, "search": {"method": "halving", "eta": 3, "space": {"learning_rate": [0.0003, 0.003, 0.03], "hidden_layers": [[8], [32], [32, 16]]}}}')"#,
    )
    .await;
    assert_eq!(version, 1);
    assert_eq!(epochs, 27);
    let rows = c
        .query(
            "SELECT r.run_id, r.status, max(m.step) AS epochs, \
                    min(m.value) FILTER (WHERE m.step <= 3) AS loss_at_3, \
                    min(m.value) FILTER (WHERE m.step <= 9) AS loss_at_9 \
             FROM runbase.runs r JOIN runbase.metrics m ON m.run_id = r.run_id \
             WHERE r.parent_run_id = $1 AND m.key = 'val_loss' \
             GROUP BY r.run_id, r.status",
            &[&parent],
        )
        .await
        .expect("children");
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().all(|r| r.get::<_, String>(1) == "FINISHED"));
    let mut trained: Vec<i64> = rows.iter().map(|r| r.get(2)).collect();
    trained.sort_unstable();
    assert_eq!(trained, [3, 3, 3, 3, 3, 3, 9, 9, 27]);
    // The three that went on had the three lowest val_loss by epoch 3; the one that went on
    // from there, the lowest of those by epoch 9.
    let mut at_3: Vec<(f64, i64)> = rows.iter().map(|r| (r.get(3), r.get(2))).collect();
    at_3.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(at_3[..3].iter().all(|(_, e)| *e > 3), "{at_3:?}");
    let mut at_9: Vec<(f64, i64)> = rows
        .iter()
        .filter(|r| r.get::<_, i64>(2) > 3)
        .map(|r| (r.get(4), r.get(2)))
        .collect();
    at_9.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(at_9[0].1, 27, "{at_9:?}");
    // The winner is the trial that trained all 27 epochs; its model is the version stored.
    let best: String = scalar(
        &c,
        "SELECT value FROM runbase.tags WHERE run_id = $1 AND key = 'best_trial_run_id'",
        &[&parent],
    )
    .await;
    let winner = rows
        .iter()
        .find(|r| r.get::<_, i64>(2) == 27)
        .map(|r| r.get::<_, String>(0));
    assert_eq!(Some(best.clone()), winner);
    let best_loss: f64 = scalar(
        &c,
        "SELECT min(value) FROM runbase.metrics WHERE run_id = $1 AND key = 'val_loss'",
        &[&best],
    )
    .await;
    assert_eq!(metrics["val_loss"].as_f64(), Some(best_loss));
    // The TRAIN run records the schedule, each trial's rung and epochs and why it stopped,
    // and the epochs the whole search cost: 9×3 + 3×6 + 1×18 = 63 instead of a grid's 243.
    let rungs: String = scalar(
        &c,
        "SELECT value FROM runbase.params WHERE run_id = $1 AND key = 'rungs'",
        &[&parent],
    )
    .await;
    assert_eq!(rungs, "[3,9,27]");
    let cost: f64 = scalar(
        &c,
        "SELECT value FROM runbase.metrics WHERE run_id = $1 AND key = 'search_epochs_trained'",
        &[&parent],
    )
    .await;
    assert_eq!(cost, 63.0);
    let per_trial = c
        .query(
            "SELECT step, value FROM runbase.metrics WHERE run_id = $1 AND key = 'trial_rung' ORDER BY step",
            &[&parent],
        )
        .await
        .expect("rungs");
    let mut rung_counts = [0; 4];
    for r in &per_trial {
        rung_counts[r.get::<_, f64>(1) as usize] += 1;
    }
    assert_eq!(rung_counts, [0, 6, 2, 1]);
    let reasons = c
        .query(
            "SELECT key, value FROM runbase.tags WHERE run_id = $1 AND key LIKE 'search.trial_%'",
            &[&parent],
        )
        .await
        .expect("reasons");
    assert_eq!(reasons.len(), 9);
    let stopped = reasons
        .iter()
        .filter(|r| r.get::<_, String>(1).starts_with("halving: ranked"))
        .count();
    assert_eq!(stopped, 8, "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_visible_live_and_as_notices_in_psql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    load_csv(&c, "breast_cancer", "cancer", "diagnosis", "text").await;
    let trainer = server.connect().await;
    let long = tokio::spawn(async move {
        trainer
            .query_one(
                "SELECT run_id FROM train('slow', 'SELECT * FROM cancer', 'diagnosis', \
                 '{\"epochs\": 300, \"batch_size\": 4, \"hidden_layers\": [256, 256]}')",
                &[],
            )
            .await
            .map(|r| r.get::<_, String>(0))
    });
    // Another connection sees the job and its epochs' metrics before TRAIN returns.
    let (run_id, epoch) = wait_for_epoch(&c, 2).await;
    let logged: i64 = scalar(
        &c,
        "SELECT count(*) FROM runbase.metrics WHERE run_id = $1 AND key = 'val_loss'",
        &[&run_id],
    )
    .await;
    assert!(logged >= epoch, "{logged} < {epoch}");
    let running: String = scalar(
        &c,
        "SELECT status FROM runbase.runs WHERE run_id = $1",
        &[&run_id],
    )
    .await;
    assert_eq!(running, "RUNNING");
    assert!(
        !long.is_finished(),
        "TRAIN returned before progress was seen"
    );
    // Other clients are served meanwhile.
    let one: i32 = scalar(&c, "SELECT CAST(1 AS int)", &[]).await;
    assert_eq!(one, 1);
    long.abort();

    // psql prints the progress NOTICEs.
    let out = Command::new("psql")
        .arg(server.conn_str())
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT version FROM train('psql', $$SELECT * FROM cancer$$, 'diagnosis', '{\"epochs\": 3}')",
        ])
        .output()
        .expect("run psql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("NOTICE:  TRAIN psql: run "), "{stderr}");
    assert!(stderr.contains("epoch 3/3: train_loss="), "{stderr}");
    assert!(stderr.contains("stored version 1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_connection_kills_the_run_and_stores_no_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    load_csv(&c, "breast_cancer", "cancer", "diagnosis", "text").await;
    let mut psql = Command::new("psql")
        .arg(server.conn_str())
        .args([
            "-X",
            "-c",
            "SELECT * FROM train('doomed', 'SELECT * FROM cancer', 'diagnosis', \
             '{\"epochs\": 100000, \"batch_size\": 2}')",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let (run_id, _) = wait_for_epoch(&c, 1).await;
    psql.kill().expect("kill psql");
    psql.wait().expect("wait psql");
    wait_until_killed(&c, &run_id).await;
    let models: i64 = scalar(
        &c,
        "SELECT count(*) FROM runbase.models WHERE name = 'doomed'",
        &[],
    )
    .await;
    assert_eq!(models, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .query("SELECT 1 FROM runbase.jobs", &[])
        .await
        .expect("jobs")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the job is still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    load_csv(&c, "iris", "iris", "species", "text").await;
    c.batch_execute(
        "CREATE TABLE odd (x double precision, y double precision, label text, d date); \
         INSERT INTO odd VALUES (1, 'NaN', 'a', '2024-01-01'), (2, 1, 'a', '2024-01-02'), (3, 2, 'a', '2024-01-03')",
    )
    .await
    .expect("odd");
    let cases = [
        (
            "SELECT * FROM train('m', 'SELECT * FROM iris', 'nope')",
            "42703",
            "does not exist",
        ),
        (
            "SELECT * FROM train('m', 'SELECT * FROM iris WHERE false', 'species')",
            "22023",
            "no rows",
        ),
        (
            "SELECT * FROM train('m', 'SELECT x, label FROM odd', 'label')",
            "22023",
            "only one class",
        ),
        (
            "SELECT * FROM train('m', 'SELECT x, y FROM odd', 'y')",
            "22023",
            "NaN",
        ),
        (
            "SELECT * FROM train('m', 'SELECT x, d, label FROM odd', 'x')",
            "22023",
            "cannot use",
        ),
        (
            "SELECT * FROM train('m', 'SELECT * FROM iris', 'species', '{epochs: 3')",
            "22P02",
            "not valid JSON",
        ),
        (
            "SELECT * FROM train('m', 'SELECT * FROM iris', 'species', '{\"epoch\": 3}')",
            "22023",
            "unknown field `epoch`",
        ),
        (
            "SELECT * FROM train('m', 'SELECT * FROM iris', 'species', '{\"device\": \"cuda:7\"}')",
            "22023",
            "not available",
        ),
        (
            "SELECT * FROM train('m', 'SELECT * FROM nowhere', 'species')",
            "42P01",
            "nowhere",
        ),
        (
            "SELECT * FROM train('../m', 'SELECT * FROM iris', 'species')",
            "22023",
            "invalid model name",
        ),
        (
            "SELECT * FROM train('m', 'DROP TABLE iris', 'species')",
            "22023",
            "one SELECT",
        ),
        (
            "SELECT * FROM reproduce('00000000-0000-0000-0000-000000000000')",
            "42704",
            "does not exist",
        ),
        (
            "SELECT * FROM train('m', 'SELECT * FROM iris', 'species', '{\"hidden_layers\": [65536, 65536]}')",
            "22023",
            "weights",
        ),
        (
            "SELECT * FROM train('m', 'SELECT * FROM iris', 'species', '{\"search\": {\"method\": \"halving\", \"space\": {\"epochs\": [5, 50]}}}')",
            "22023",
            "decides how many epochs",
        ),
    ];
    for (sql, code, message) in cases {
        let err = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&err), code, "{sql}: {err:?}");
        let text = err
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(text.contains(message), "{sql}: {text}");
    }
    // A failure after the run started marks it FAILED with the error as a tag.
    let row = c
        .query_one(
            "SELECT r.status, t.value FROM runbase.runs r JOIN runbase.tags t ON r.run_id = t.run_id \
             WHERE t.key = 'error' AND t.value LIKE '%only one class%'",
            &[],
        )
        .await
        .expect("failed run");
    assert_eq!(row.get::<_, String>(0), "FAILED");
    // Nothing was registered and the table is intact; the server still serves.
    let models: i64 = scalar(&c, "SELECT count(*) FROM runbase.models", &[]).await;
    assert_eq!(models, 0);
    let n: i64 = scalar(&c, "SELECT count(*) FROM iris", &[]).await;
    assert_eq!(n, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_training_with_57014_and_kills_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    load_csv(&c, "breast_cancer", "cancer", "diagnosis", "text").await;
    let trainer = server.connect().await;
    let cancel = trainer.cancel_token();
    let long = tokio::spawn(async move {
        trainer
            .query_one(
                "SELECT * FROM train('cancelled', 'SELECT * FROM cancer', 'diagnosis', \
                 '{\"epochs\": 100000, \"batch_size\": 2}')",
                &[],
            )
            .await
    });
    let (run_id, _) = wait_for_epoch(&c, 1).await;
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request");
    let err = tokio::time::timeout(Duration::from_secs(30), long)
        .await
        .expect("TRAIN returned after the cancel")
        .expect("join")
        .expect_err("TRAIN was cancelled");
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    wait_until_killed(&c, &run_id).await;
    let models: i64 = scalar(&c, "SELECT count(*) FROM runbase.models", &[]).await;
    assert_eq!(models, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_trains_with_bound_parameters_through_psycopg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/train_script.py");
    // `python3` is the test venv's (scripts/env.sh puts it first on PATH; setup installs psycopg).
    let out = tokio::task::spawn_blocking({
        let conn = server.conn_str();
        let csv = data_file("iris");
        move || {
            Command::new("python3")
                .arg(script)
                .arg(conn)
                .arg(csv)
                .output()
                .expect("run python3")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "train script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(stdout.contains("ok: trained"));
}
