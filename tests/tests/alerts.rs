//! Alerts end to end against the real server: rules made in SQL, events for a FAILED run,
//! a NaN loss, a plateau and a hung run, delivered as rows, as `LISTEN runbase_alerts`
//! notifications (tokio-postgres, psycopg and psql) and as webhook POSTs to a loopback
//! receiver; `stop` rules ending an external run (`should_stop`) and a TRAIN; a read-only
//! user who can read alerts but not make them; malformed rules.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use runbase_tests::client::{load_csv, scalar, sqlstate};
use runbase_tests::server::{TestServer, runbase_bin};
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// A client whose notifications arrive on the returned channel.
async fn listening_client(
    server: &TestServer,
) -> (
    Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let (client, mut connection) = tokio_postgres::connect(&server.conn_str(), NoTls)
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

async fn start_run(c: &Client, experiment: &str) -> String {
    scalar(c, "SELECT start_run($1)", &[&experiment]).await
}

async fn log(c: &Client, run: &str, key: &str, value: f64) {
    c.execute("SELECT log_metric($1, $2, $3)", &[&run, &key, &value])
        .await
        .expect("log_metric");
}

/// The alert events as (alert, run_id, kind), oldest first.
async fn events(c: &Client) -> Vec<(String, String, String)> {
    c.query(
        "SELECT alert, run_id, kind FROM runbase.alert_events ORDER BY fired_at, alert",
        &[],
    )
    .await
    .expect("alert events")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Waits until `pred` holds of the events (clock conditions fire within a tick or two).
async fn wait_for_events(
    c: &Client,
    pred: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = events(c).await;
        if pred(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "events never matched: {e:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_nan_plateau_and_hung_runs_fire_once_and_reach_listeners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    let (listener, mut notes) = listening_client(&server).await;
    listener
        .batch_execute("LISTEN runbase_alerts")
        .await
        .expect("LISTEN");

    c.batch_execute("SELECT create_experiment('exp')")
        .await
        .expect("experiment");
    for (name, rule) in [
        ("failed", r#"{"kind": "run_failed", "experiment": "exp"}"#),
        ("nan", r#"{"kind": "not_finite", "metric": "loss"}"#),
        (
            "flat",
            r#"{"kind": "plateau", "metric": "val_loss", "steps": 3}"#,
        ),
        (
            "silent",
            r#"{"kind": "hung", "experiment": "exp", "seconds": 1, "mark_failed_after": 1}"#,
        ),
    ] {
        c.execute("SELECT create_alert($1, $2)", &[&name, &rule])
            .await
            .unwrap_or_else(|e| panic!("create_alert {name}: {e}"));
    }
    let rules: i64 = scalar(&c, "SELECT count(*) FROM runbase.alerts", &[]).await;
    assert_eq!(rules, 4);

    // A NaN loss, twice: one event.
    let a = start_run(&c, "exp").await;
    log(&c, &a, "loss", 0.5).await;
    log(&c, &a, "loss", f64::NAN).await;
    log(&c, &a, "loss", f64::NAN).await;
    // A plateau: 1.0, then 0.9 (better), then three points that are not.
    let b = start_run(&c, "exp").await;
    for v in [1.0, 0.9, 0.95, 0.9, 0.97] {
        log(&c, &b, "val_loss", v).await;
    }
    // A failed run.
    c.execute("SELECT end_run($1, 'FAILED')", &[&a])
        .await
        .expect("end_run");
    // `b` keeps logging (not hung); a third run goes silent and is marked FAILED.
    let silent = start_run(&c, "exp").await;
    log(&c, &silent, "loss", 1.0).await;
    let events = wait_for_events(&c, |e| {
        e.iter()
            .any(|(alert, run, _)| alert == "failed" && *run == silent)
    })
    .await;
    let has = |alert: &str, run: &str, kind: &str| {
        events
            .iter()
            .filter(|(a, r, k)| a == alert && r == run && k == kind)
            .count()
    };
    assert_eq!(has("nan", &a, "not_finite"), 1, "{events:?}");
    assert_eq!(has("flat", &b, "plateau"), 1, "{events:?}");
    assert_eq!(has("failed", &a, "run_failed"), 1, "{events:?}");
    assert_eq!(has("silent", &silent, "hung"), 1, "{events:?}");
    assert_eq!(has("failed", &silent, "run_failed"), 1, "{events:?}");
    // `b` logged a moment ago... but it is also silent now; what matters is that nothing
    // fired twice.
    let mut seen = std::collections::HashSet::new();
    for (alert, run, _) in &events {
        assert!(
            seen.insert((alert.clone(), run.clone())),
            "fired twice: {events:?}"
        );
    }
    let status: String = scalar(
        &c,
        "SELECT status FROM runbase.runs WHERE run_id = $1",
        &[&silent],
    )
    .await;
    assert_eq!(status, "FAILED");
    let reason: String = scalar(
        &c,
        "SELECT value FROM runbase.tags WHERE run_id = $1 AND key = 'runbase.failure_reason'",
        &[&silent],
    )
    .await;
    assert!(reason.contains("silent"), "{reason}");

    // Every event reached the listener as JSON on runbase_alerts.
    let mut payloads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while payloads.len() < events.len() && Instant::now() < deadline {
        if let Ok(Some((channel, payload))) =
            tokio::time::timeout(Duration::from_secs(1), notes.recv()).await
        {
            assert_eq!(channel, "runbase_alerts");
            payloads.push(serde_json::from_str::<serde_json::Value>(&payload).expect("JSON"));
        }
    }
    assert_eq!(payloads.len(), events.len(), "{payloads:?}");
    let nan = payloads
        .iter()
        .find(|p| p["alert"] == "nan")
        .expect("the nan event");
    assert_eq!(nan["run_id"], a.as_str());
    assert_eq!(nan["kind"], "not_finite");
    assert!(
        nan["text"].as_str().is_some_and(|t| t.contains("nan")),
        "{nan}"
    );

    // Dropped: no more events; the old ones stay.
    c.execute("SELECT drop_alert('nan')", &[])
        .await
        .expect("drop_alert");
    let again = c
        .execute("SELECT drop_alert('nan')", &[])
        .await
        .expect_err("dropped already");
    assert_eq!(sqlstate(&again), "42704");
    let d = start_run(&c, "exp").await;
    log(&c, &d, "loss", f64::INFINITY).await;
    assert!(
        !events_now(&c)
            .await
            .iter()
            .any(|(a, r, _)| a == "nan" && *r == d)
    );
}

async fn events_now(c: &Client) -> Vec<(String, String, String)> {
    events(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_psycopg_receive_notifications() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    // psql prints a notification on its own channel right after the command.
    let out = server.psql(&["-c", "LISTEN ch", "-c", "NOTIFY ch, 'hello'"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"Asynchronous notification "ch" with payload "hello" received"#),
        "{stdout}"
    );

    // psycopg blocks in notifies() on an idle connection: the alert is pushed to it.
    let python = std::env::var("RUNBASE_TORCH_VENV")
        .map(|v| std::path::PathBuf::from(v).join("bin/python3"))
        .unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
conn.execute("LISTEN runbase_alerts")
print("listening", flush=True)
for n in conn.notifies(timeout=30, stop_after=1):
    print(n.channel, n.payload, flush=True)
"#;
    let mut child = std::process::Command::new(python)
        .args([
            "-c",
            script,
            &format!("{} dbname=runbase", server.conn_str()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run python with psycopg (scripts/setup.sh installs it)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("a line").expect("read"), "listening");
    let c = server.connect().await;
    c.batch_execute(
        "SELECT create_experiment('e');
         SELECT create_alert('big', '{\"kind\": \"threshold\", \"metric\": \"loss\", \"above\": 10}')",
    )
    .await
    .expect("alert");
    let run = start_run(&c, "e").await;
    log(&c, &run, "loss", 11.0).await;
    let line = lines.next().expect("a notification").expect("read");
    assert!(line.starts_with("runbase_alerts "), "{line}");
    let payload: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("runbase_alerts ")).expect("JSON payload");
    assert_eq!(payload["alert"], "big");
    assert_eq!(payload["value"], 11.0);
    assert!(child.wait().expect("python").success());
}

/// A loopback HTTP receiver: each request body goes to the channel; answers 200.
fn webhook_receiver() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_post_and_a_dead_receiver_does_not_slow_logging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, bodies) = webhook_receiver();
    // A port nothing listens on.
    let dead = runbase_tests::server::free_ports::<1>()[0];
    let server =
        TestServer::start_with(dir.path(), &["--alert-webhook-allow", "http://127.0.0.1/"]);
    let c = server.connect().await;
    c.batch_execute("SELECT create_experiment('e')")
        .await
        .expect("experiment");
    c.execute(
        "SELECT create_alert('hook', $1)",
        &[&format!(
            r#"{{"kind": "not_finite", "metric": "loss", "webhook": "http://127.0.0.1:{port}/hook"}}"#
        )],
    )
    .await
    .expect("alert with a webhook");
    c.execute(
        "SELECT create_alert('deadhook', $1)",
        &[&format!(
            r#"{{"kind": "threshold", "metric": "loss", "above": 100, "webhook": "http://127.0.0.1:{dead}/x"}}"#
        )],
    )
    .await
    .expect("alert with a dead webhook");
    let refused = c
        .execute(
            "SELECT create_alert('elsewhere', '{\"kind\": \"run_failed\", \"webhook\": \"http://example.com/x\"}')",
            &[],
        )
        .await
        .expect_err("not allowed");
    assert_eq!(sqlstate(&refused), "42501", "{refused}");

    let run = start_run(&c, "e").await;
    log(&c, &run, "loss", f64::NAN).await;
    let body = bodies
        .recv_timeout(Duration::from_secs(10))
        .expect("the webhook was POSTed");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(json["alert"], "hook");
    assert!(
        json["text"].as_str().is_some_and(|t| t.contains("hook")),
        "{json}"
    );

    // The dead receiver's alert fires; logging goes on at full speed meanwhile.
    log(&c, &run, "loss", 1000.0).await;
    let start = Instant::now();
    for i in 0..50 {
        log(&c, &run, "other", f64::from(i)).await;
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "50 log_metric calls took {took:?}"
    );
    // Its delivery is recorded as failed after the retries (about 3.5 s of backoff).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = c
            .query(
                "SELECT alert, delivered, attempts, error FROM runbase.alert_deliveries ORDER BY alert",
                &[],
            )
            .await
            .expect("deliveries");
        if rows.len() == 2 {
            let dead_row = &rows[0];
            assert_eq!(dead_row.get::<_, String>(0), "deadhook");
            assert!(!dead_row.get::<_, bool>(1));
            assert_eq!(dead_row.get::<_, i64>(2), 4);
            assert!(dead_row.get::<_, Option<String>>(3).is_some());
            assert_eq!(rows[1].get::<_, String>(0), "hook");
            assert!(rows[1].get::<_, bool>(1));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries not recorded: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_rules_stop_external_runs_and_train() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let c = server.connect().await;
    c.batch_execute(
        "SELECT create_experiment('ext');
         SELECT create_experiment('iris_stop');
         SELECT create_alert('too_big', '{\"kind\": \"threshold\", \"experiment\": \"ext\", \"metric\": \"loss\", \"above\": 5, \"action\": \"stop\"}');
         SELECT create_alert('halt', '{\"kind\": \"threshold\", \"experiment\": \"iris_stop\", \"metric\": \"train_loss\", \"below\": 1000, \"action\": \"stop\"}')",
    )
    .await
    .expect("rules");

    // An external run: should_stop turns true once the rule fires.
    let run = start_run(&c, "ext").await;
    log(&c, &run, "loss", 1.0).await;
    let before: bool = scalar(&c, "SELECT should_stop($1)", &[&run]).await;
    assert!(!before);
    log(&c, &run, "loss", 6.0).await;
    let after: bool = scalar(&c, "SELECT should_stop($1)", &[&run]).await;
    assert!(after);
    let tag: String = scalar(
        &c,
        "SELECT value FROM runbase.tags WHERE run_id = $1 AND key = 'stopped_by'",
        &[&run],
    )
    .await;
    assert_eq!(tag, "too_big");
    let missing = c
        .query_one(
            "SELECT should_stop('00000000-0000-0000-0000-000000000000')",
            &[],
        )
        .await
        .expect_err("no such run");
    assert_eq!(sqlstate(&missing), "42704");

    // A TRAIN: the first epoch's loss trips the rule; training ends at the next batch.
    load_csv(&c, "iris", "iris", "species", "text").await;
    let err = c
        .query(
            "SELECT * FROM train('iris_halted', $$SELECT * FROM iris$$, 'species', \
             '{\"epochs\": 500, \"experiment\": \"iris_stop\"}')",
            &[],
        )
        .await
        .expect_err("stopped");
    assert_eq!(sqlstate(&err), "57014", "{err}");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("stopped by alert \"halt\""), "{message}");
    let row = c
        .query_one(
            "SELECT r.status, t.value FROM runbase.runs r JOIN runbase.tags t \
             ON t.run_id = r.run_id AND t.key = 'stopped_by' WHERE r.experiment = 'iris_stop'",
            &[],
        )
        .await
        .expect("the stopped TRAIN run");
    assert_eq!(row.get::<_, String>(0), "KILLED");
    assert_eq!(row.get::<_, String>(1), "halt");
    let epochs: i64 = scalar(
        &c,
        "SELECT count(*) FROM runbase.metrics m JOIN runbase.runs r ON m.run_id = r.run_id \
         WHERE r.experiment = 'iris_stop' AND m.key = 'train_loss'",
        &[],
    )
    .await;
    assert!(epochs < 5, "stopped after {epochs} epochs");
    let models: i64 = scalar(
        &c,
        "SELECT count(*) FROM runbase.models WHERE name = 'iris_halted'",
        &[],
    )
    .await;
    assert_eq!(models, 0, "no model stored");
    // The metrics saw a KILLED training and its epochs.
    let killed: f64 = scalar(
        &c,
        "SELECT value FROM runbase.stats WHERE name = 'runbase_train_runs_finished_total' \
         AND labels = 'status=\"KILLED\"'",
        &[],
    )
    .await;
    assert_eq!(killed, 1.0);
    let trained: f64 = scalar(
        &c,
        "SELECT value FROM runbase.stats WHERE name = 'runbase_train_epochs_total'",
        &[],
    )
    .await;
    assert_eq!(trained, epochs as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_users_read_alerts_and_bad_rules_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = std::process::Command::new(runbase_bin())
        .args(["sql", "--data-dir"])
        .arg(&data)
        .arg("CREATE USER admin WITH SUPERUSER PASSWORD 'Admin-Secret-1'")
        .output()
        .expect("runbase sql");
    assert!(out.status.success(), "{out:?}");
    let server = TestServer::start_with(&data, &["--auth", "scram"]);
    let admin = server
        .connect_as("admin", "Admin-Secret-1")
        .await
        .expect("admin");
    admin
        .batch_execute(
            "CREATE USER bi WITH PASSWORD 'Dashboards-Only-7' IN ROLE pg_read_all_data;
             SELECT create_alert('any_failure', '{\"kind\": \"run_failed\"}')",
        )
        .await
        .expect("setup");
    let creator: String = scalar(
        &admin,
        "SELECT created_by FROM runbase.alerts WHERE name = 'any_failure'",
        &[],
    )
    .await;
    assert_eq!(creator, "admin");
    let bi = server
        .connect_as("bi", "Dashboards-Only-7")
        .await
        .expect("bi");
    let n: i64 = scalar(&bi, "SELECT count(*) FROM runbase.alerts", &[]).await;
    assert_eq!(n, 1);
    let _: i64 = scalar(&bi, "SELECT count(*) FROM runbase.alert_events", &[]).await;
    bi.batch_execute("LISTEN runbase_alerts")
        .await
        .expect("read-only users may LISTEN");
    for sql in [
        "SELECT create_alert('mine', '{\"kind\": \"run_failed\"}')",
        "SELECT drop_alert('any_failure')",
    ] {
        let e = bi.batch_execute(sql).await.expect_err("read-only");
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
    }

    for (rule, code, says) in [
        ("{", "22023", "not valid"),
        (r#"{"kind": "nope"}"#, "22023", "unknown kind"),
        (
            r#"{"kind": "threshold", "metric": "loss"}"#,
            "22023",
            "\"above\" or \"below\"",
        ),
        (r#"{"kind": "hung", "seconds": 0}"#, "22023", "positive"),
        (
            r#"{"kind": "run_failed", "experiment": "nowhere"}"#,
            "42704",
            "does not exist",
        ),
    ] {
        let e = admin
            .execute("SELECT create_alert('bad', $1)", &[&rule])
            .await
            .expect_err(rule);
        assert_eq!(sqlstate(&e), code, "{rule}: {e}");
        let message = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(message.contains(says), "{rule}: {message}");
    }
    let dup = admin
        .execute(
            "SELECT create_alert('any_failure', '{\"kind\": \"run_failed\"}')",
            &[],
        )
        .await
        .expect_err("exists");
    assert_eq!(sqlstate(&dup), "42710");
}
