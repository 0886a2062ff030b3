//! PREDICT and the model registry end to end against the real `runbase` binary: scoring
//! held-out rows (table and scalar `predict`), `evaluate`, model references and aliases,
//! the shared model cache, many clients predicting while a TRAIN runs, session device
//! settings, bad input, and — through psycopg and PyTorch in Python — importing a model
//! made in PyTorch and exporting one trained in runbase.

use std::process::Command;
use std::time::{Duration, Instant};

use runbase_tests::client::{data_file, load_csv, scalar, sqlstate};
use runbase_tests::server::TestServer;
use tokio_postgres::Client;

/// iris with a row id: `iris_all(id, four measurements, species)`.
async fn load_iris(client: &Client) {
    load_csv(client, "iris", "iris_raw", "species", "text").await;
    client
        .batch_execute(
            "CREATE TABLE iris_all AS SELECT CAST(row_number() OVER () AS bigint) AS id, * FROM iris_raw",
        )
        .await
        .expect("iris_all");
}

const FEATURES: &str = "sepal_length, sepal_width, petal_length, petal_width";

/// Trains `name` on three of every four iris rows; returns the version.
async fn train_iris(client: &Client, name: &str, seed: u64) -> i64 {
    let sql = format!(
        "SELECT version FROM train('{name}', 'SELECT {FEATURES}, species FROM iris_all WHERE id % 4 <> 0', 'species', '{{\"epochs\": 60, \"learning_rate\": 0.01, \"seed\": {seed}}}')"
    );
    scalar(client, &sql, &[]).await
}

/// The held-out rows, as a query.
const HELD_OUT: &str = "SELECT * FROM iris_all WHERE id % 4 = 0";

/// `(id, prediction, probabilities)` of the held-out rows by `model`, by id.
async fn predictions(client: &Client, model: &str) -> Vec<(i64, String, Vec<f64>)> {
    client
        .query(
            &format!(
                "SELECT id, prediction, probabilities FROM predict('{model}', '{HELD_OUT}') ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("predict {model}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn predict_scores_held_out_rows_and_evaluate_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    load_iris(&client).await;
    assert_eq!(train_iris(&client, "iris_m", 3).await, 1);

    // Table predict: every query column, plus the label and probabilities in class order.
    let rows = client
        .query(
            &format!("SELECT * FROM predict('iris_m', '{HELD_OUT}') ORDER BY id"),
            &[],
        )
        .await
        .expect("predict");
    assert_eq!(rows.len(), 37);
    // Counted in the metrics: the 37 rows, in at least one forward pass; the model was
    // loaded once into the cache.
    let stat = |name: &'static str| {
        let client = &client;
        async move {
            let v: f64 = scalar(
                client,
                "SELECT value FROM runbase.stats WHERE name = $1",
                &[&name],
            )
            .await;
            v
        }
    };
    assert_eq!(stat("runbase_inference_rows_total").await, 37.0);
    assert!(stat("runbase_inference_batches_total").await >= 1.0);
    assert_eq!(stat("runbase_model_cache_models").await, 1.0);
    assert!(stat("runbase_model_cache_bytes").await > 0.0);
    let columns: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        columns,
        [
            "id",
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
            "species",
            "prediction",
            "probabilities"
        ]
    );
    let mut correct = 0;
    for r in &rows {
        let species: String = r.get("species");
        let predicted: String = r.get("prediction");
        let p: Vec<f64> = r.get("probabilities");
        assert_eq!(p.len(), 3);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{p:?}");
        // The label is the most probable class, classes in sorted order.
        let best = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .expect("best");
        assert_eq!(predicted, ["setosa", "versicolor", "virginica"][best]);
        correct += usize::from(species == predicted);
    }
    let accuracy = correct as f64 / rows.len() as f64;
    assert!(accuracy >= 0.9, "held-out accuracy {accuracy}");

    // evaluate on the same rows reports the same accuracy, with TRAIN's metrics.
    let metrics = client
        .query(
            &format!("SELECT metric, value FROM evaluate('iris_m', '{HELD_OUT}', 'species')"),
            &[],
        )
        .await
        .expect("evaluate");
    let names: Vec<String> = metrics.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["accuracy", "f1", "log_loss"]);
    let evaluated: f64 = metrics[0].get(1);
    assert!(
        (evaluated - accuracy).abs() < 1e-12,
        "{evaluated} vs {accuracy}"
    );
    // The target defaults to the one the model was trained on.
    let default_target: f64 = scalar(
        &client,
        &format!("SELECT value FROM evaluate('iris_m', '{HELD_OUT}') WHERE metric = 'accuracy'"),
        &[],
    )
    .await;
    assert_eq!(default_target, evaluated);

    // Scalar predict gives the same labels, row by row.
    let scalar_rows = client
        .query(
            &format!(
                "SELECT id, predict('iris_m', {FEATURES}) AS p FROM iris_all WHERE id % 4 = 0 ORDER BY id"
            ),
            &[],
        )
        .await
        .expect("scalar predict");
    assert_eq!(scalar_rows.len(), rows.len());
    for (s, t) in scalar_rows.iter().zip(&rows) {
        assert_eq!(s.get::<_, i64>(0), t.get::<_, i64>("id"));
        assert_eq!(s.get::<_, String>(1), t.get::<_, String>("prediction"));
    }

    // Aggregates and filters over predict compose like any table.
    let wrong: i64 = scalar(
        &client,
        &format!(
            "SELECT count(*) FROM predict('iris_m', '{HELD_OUT}') WHERE prediction <> species"
        ),
        &[],
    )
    .await;
    assert_eq!(wrong as usize, rows.len() - correct);

    // A regression model predicts numbers.
    load_csv(
        &client,
        "diabetes",
        "diabetes",
        "progression",
        "double precision",
    )
    .await;
    client
        .query_one(
            "SELECT * FROM train('diab', 'SELECT * FROM diabetes', 'progression', '{\"model\": \"linear\", \"epochs\": 40, \"seed\": 2}')",
            &[],
        )
        .await
        .expect("train diabetes");
    let r2: f64 = scalar(
        &client,
        "SELECT value FROM evaluate('diab', 'SELECT * FROM diabetes') WHERE metric = 'r2'",
        &[],
    )
    .await;
    assert!(r2 > 0.4, "r2 {r2}");
    let mean: f64 = scalar(
        &client,
        "SELECT avg(prediction) FROM predict('diab', 'SELECT * FROM diabetes')",
        &[],
    )
    .await;
    assert!((100.0..200.0).contains(&mean), "mean prediction {mean}");
}

#[tokio::test]
async fn model_references_follow_versions_and_aliases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    load_iris(&client).await;
    assert_eq!(train_iris(&client, "flower", 1).await, 1);
    assert_eq!(train_iris(&client, "flower", 2).await, 2);
    let v1 = predictions(&client, "flower@1").await;
    let v2 = predictions(&client, "flower@2").await;
    assert_ne!(v1, v2, "two seeds, two different models");
    // A plain name is the latest version…
    assert_eq!(predictions(&client, "flower").await, v2);
    // …or the one `default` points at.
    let set: i64 = scalar(
        &client,
        "SELECT set_model_alias('flower', 'default', 1)",
        &[],
    )
    .await;
    assert_eq!(set, 1);
    assert_eq!(predictions(&client, "flower").await, v1);
    let _: i64 = scalar(
        &client,
        "SELECT set_model_alias('flower', 'production', 2)",
        &[],
    )
    .await;
    assert_eq!(predictions(&client, "flower@production").await, v2);
    // Moving an alias is picked up by the next query.
    let _: i64 = scalar(
        &client,
        "SELECT set_model_alias('flower', 'production', 1)",
        &[],
    )
    .await;
    assert_eq!(predictions(&client, "flower@production").await, v1);
    let aliases: Vec<(String, String, i64)> = client
        .query(
            "SELECT name, alias, version FROM runbase.model_aliases ORDER BY alias",
            &[],
        )
        .await
        .expect("aliases")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        aliases,
        [
            ("flower".to_string(), "default".to_string(), 1),
            ("flower".to_string(), "production".to_string(), 1)
        ]
    );
    let dropped: bool = scalar(&client, "SELECT drop_model_alias('flower', 'default')", &[]).await;
    assert!(dropped);
    assert_eq!(predictions(&client, "flower").await, v2);

    // Bad references and alias calls.
    for (sql, code) in [
        ("SELECT * FROM predict('nope', 'SELECT 1 AS x')", "42704"),
        (
            "SELECT * FROM predict('flower@9', 'SELECT * FROM iris_all')",
            "42704",
        ),
        (
            "SELECT * FROM predict('flower@staging', 'SELECT * FROM iris_all')",
            "42704",
        ),
        (
            "SELECT * FROM predict('../flower', 'SELECT * FROM iris_all')",
            "22023",
        ),
        ("SELECT set_model_alias('flower', 'x', 7)", "42704"),
        ("SELECT set_model_alias('nope', 'x', 1)", "42704"),
        ("SELECT set_model_alias('flower', '3', 1)", "22023"),
        ("SELECT drop_model_alias('flower', 'default')", "42704"),
    ] {
        let e = client.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {e}");
    }
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_server_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    load_iris(&client).await;
    train_iris(&client, "iris_m", 3).await;
    for (sql, code, says) in [
        (
            "SELECT * FROM predict('iris_m', 'SELECT sepal_length, sepal_width FROM iris_all')",
            "42703",
            "petal_length",
        ),
        (
            "SELECT * FROM predict('iris_m', 'SELECT species AS sepal_length, sepal_width, petal_length, petal_width FROM iris_all')",
            "42804",
            "sepal_length",
        ),
        (
            "SELECT * FROM predict('iris_m', 'SELECT *, 1 AS prediction FROM iris_all')",
            "",
            "prediction",
        ),
        (
            "SELECT * FROM predict('iris_m', 'SELEC nothing')",
            "42601",
            "",
        ),
        (
            "SELECT * FROM predict('iris_m', 'SELECT * FROM missing_table')",
            "42P01",
            "missing_table",
        ),
        ("SELECT * FROM predict('iris_m')", "", "2 arguments"),
        (
            "SELECT predict('iris_m', sepal_length) FROM iris_all",
            "",
            "4 inputs",
        ),
        (
            "SELECT * FROM evaluate('iris_m', 'SELECT * FROM iris_all', 'nope')",
            "42703",
            "nope",
        ),
    ] {
        let e = client.query(sql, &[]).await.expect_err(sql);
        if !code.is_empty() {
            assert_eq!(sqlstate(&e), code, "{sql}: {e}");
        }
        let message = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(message.contains(says), "{sql}: {message}");
    }
    // An unseen label in evaluate's target is named.
    let e = client
        .query(
            &format!(
                "SELECT * FROM evaluate('iris_m', $$SELECT {FEATURES}, 'orchid' AS species FROM iris_all$$)"
            ),
            &[],
        )
        .await
        .expect_err("unseen label");
    assert_eq!(sqlstate(&e), "22023", "{e}");
    assert!(format!("{e:?}").contains("orchid"), "{e:?}");
    // The session's device: on a machine without a GPU, asking for one is a clear error.
    let shown: String = scalar(&client, "SHOW runbase.device", &[]).await;
    assert_eq!(shown, "default");
    client
        .batch_execute("SET runbase.device = 'cuda'")
        .await
        .expect("set device");
    let on_cuda = client
        .query(
            &format!("SELECT count(*) FROM predict('iris_m', '{HELD_OUT}')"),
            &[],
        )
        .await;
    let gpus: i64 = scalar(
        &client,
        "SELECT count(*) FROM runbase.devices WHERE kind = 'cuda'",
        &[],
    )
    .await;
    match (gpus, on_cuda) {
        (0, Err(e)) => assert_eq!(sqlstate(&e), "22023", "{e}"),
        (0, Ok(_)) => panic!("predict on cuda without a GPU succeeded"),
        (_, r) => {
            r.expect("predict on cuda");
        }
    }
    client
        .batch_execute("SET runbase.device = 'cpu'")
        .await
        .expect("set device");
    let n: i64 = scalar(
        &client,
        &format!("SELECT count(*) FROM predict('iris_m', '{HELD_OUT}')"),
        &[],
    )
    .await;
    assert_eq!(n, 37);
    // Another connection never saw the SET.
    let other = server.connect().await;
    let shown: String = scalar(&other, "SHOW runbase.device", &[]).await;
    assert_eq!(shown, "default");
}

#[tokio::test]
async fn many_clients_predict_at_once_while_a_training_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    load_iris(&client).await;
    train_iris(&client, "iris_m", 3).await;
    let expected = predictions(&client, "iris_m").await;

    // A long training in the background.
    let trainer = server.connect().await;
    let training = tokio::spawn(async move {
        trainer
            .query(
                "SELECT * FROM train('slow', 'SELECT * FROM iris_all', 'species', '{\"epochs\": 1000000, \"batch_size\": 1, \"max_seconds\": 120}')",
                &[],
            )
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let training: i64 = scalar(
            &client,
            "SELECT count(*) FROM runbase.jobs WHERE state = 'training'",
            &[],
        )
        .await;
        if training > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the training did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Eight clients, each predicting ten times, all while the training runs.
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let c = server.connect().await;
        let expected = expected.clone();
        clients.push(tokio::spawn(async move {
            for _ in 0..10 {
                assert_eq!(predictions(&c, "iris_m").await, expected);
            }
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "80 predictions took {took:?} next to a training"
    );
    let still: i64 = scalar(
        &client,
        "SELECT count(*) FROM runbase.jobs WHERE state = 'training'",
        &[],
    )
    .await;
    assert_eq!(still, 1, "the training should still be running");

    // One loaded copy of the model served everyone.
    let loaded: Vec<(String, i64, i64)> = client
        .query("SELECT name, version, hits FROM runbase.loaded_models", &[])
        .await
        .expect("loaded models")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!((loaded[0].0.as_str(), loaded[0].1), ("iris_m", 1));
    assert!(loaded[0].2 >= 80, "{loaded:?}");

    // Cancel the training: dropping its connection kills it.
    training.abort();
    let _ = training.await;
}

/// The Python half: a PyTorch model imported and served, a runbase model exported and
/// loaded in PyTorch, both agreeing with Python's own outputs; bound parameters; bad
/// blobs and specs refused without registering anything.
#[tokio::test]
async fn python_imports_and_exports_models_through_psycopg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/predict_script.py");
    let out = tokio::task::spawn_blocking({
        let conn = server.conn_str();
        let csv = data_file("iris");
        move || {
            Command::new("python3")
                .args([script, conn.as_str(), csv.to_str().expect("utf-8 path")])
                .output()
                .expect("run python3")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "predict_script.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("OK"), "{stdout}");
}

/// `POST path` with `body` as `content_type` to the server's HTTP port; (status, body).
fn http_post(server: &TestServer, path: &str, content_type: &str, body: &str) -> (u16, String) {
    runbase_tests::server::http_request(
        server.http_addr(),
        "POST",
        path,
        &format!("Content-Type: {content_type}\r\n"),
        body,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_scoring_over_http_answers_what_predict_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let client = server.connect().await;
    load_iris(&client).await;
    train_iris(&client, "iris_web", 5).await;
    let offline: Vec<String> = predictions(&client, "iris_web")
        .await
        .into_iter()
        .map(|(_, label, _)| label)
        .collect();
    let rows: Vec<Vec<f64>> = client
        .query(
            &format!("SELECT {FEATURES} FROM ({HELD_OUT}) AS h ORDER BY id"),
            &[],
        )
        .await
        .expect("held-out rows")
        .iter()
        .map(|r| (0..4).map(|i| r.get::<_, f64>(i)).collect())
        .collect();
    let columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    let split = serde_json::json!({
        "dataframe_split": { "columns": columns, "data": rows }
    });
    let records: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .zip(r)
                .map(|(c, v)| (c.to_string(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    let csv = std::iter::once(columns.join(","))
        .chain(rows.iter().map(|r| {
            r.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }))
        .collect::<Vec<_>>()
        .join("\n");
    let answers = [
        http_post(
            &server,
            "/api/v1/models/iris_web/predict",
            "application/json",
            &split.to_string(),
        ),
        http_post(
            &server,
            "/invocations?model=iris_web@1",
            "application/json",
            &serde_json::json!({ "dataframe_records": records }).to_string(),
        ),
        http_post(&server, "/invocations?model=iris_web", "text/csv", &csv),
        http_post(
            &server,
            "/invocations?model=iris_web",
            "application/json",
            &serde_json::json!({ "inputs": rows }).to_string(),
        ),
    ];
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let online: Vec<String> = json["predictions"]
            .as_array()
            .expect("predictions")
            .iter()
            .map(|p| p.as_str().expect("a label").to_string())
            .collect();
        assert_eq!(online, offline, "online and offline answers are identical");
    }

    // Bad requests get 4xx JSON errors, and the server goes on.
    let missing =
        serde_json::json!({"dataframe_split": {"columns": ["sepal_length"], "data": [[1.0]]}});
    for (path, content_type, body, want) in [
        (
            "/api/v1/models/iris_web/predict",
            "application/json",
            missing.to_string(),
            400,
        ),
        (
            "/api/v1/models/no_such/predict",
            "application/json",
            split.to_string(),
            404,
        ),
        ("/invocations", "application/json", split.to_string(), 400),
        (
            "/invocations?model=iris_web",
            "application/json",
            "{not json".to_string(),
            400,
        ),
        (
            "/invocations?model=iris_web",
            "text/plain",
            csv.clone(),
            400,
        ),
        (
            "/invocations?model=iris_web",
            "application/json",
            r#"{"inputs": [["a", "b", "c", "d"]]}"#.to_string(),
            400,
        ),
    ] {
        let (status, answer) = http_post(&server, path, content_type, &body);
        assert_eq!(status, want, "{path}: {answer}");
        assert!(answer.contains("error_code"), "{answer}");
    }
    let n: i64 = scalar(&client, "SELECT count(*) FROM iris_all", &[]).await;
    assert_eq!(n, 150);
}
