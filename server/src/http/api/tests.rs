//! The JSON API over a real socket and a real RocksDB: series, the runs table, the query
//! box, events, logins.

use std::io::{Read, Write};

use runbase_engine::Database;
use runbase_engine::tracking::{MetricPoint, NewRun};

/// `GET path` from `addr` over a plain socket, off the async workers: (status line, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:5480\r\nConnection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        let status = head.lines().next().unwrap_or_default().to_string();
        (status, body.to_string())
    })
    .await
    .expect("request")
}

/// `method path` with `headers` and a JSON `body`: (status line, response headers, body).
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (String, String, String) {
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or("127.0.0.1:5480", |(_, v)| *v);
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        let status = head.lines().next().unwrap_or_default().to_string();
        (status, head.to_string(), body.to_string())
    })
    .await
    .expect("request")
}

/// Starts the HTTP front end over `db` with `access` on a free port.
async fn start(
    db: &Database,
    access: super::super::ApiAccess,
) -> (
    std::net::SocketAddr,
    crate::supervisor::ShutdownTrigger,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, shutdown) = crate::supervisor::shutdown_channel();
    let server = tokio::spawn(super::super::serve(
        db.clone(),
        listener,
        shutdown,
        std::time::Duration::from_secs(5),
        access,
        None,
        super::super::HttpServices::default(),
    ));
    (addr, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_table_filters_sorts_pages_and_events_stream_live_points() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::open_dir(dir.path()).await.expect("open");
    let t = db.tracking().clone();
    let runs = tokio::task::spawn_blocking(move || {
        let mut runs = Vec::new();
        for i in 0..30i64 {
            let run = t
                .start_run(
                    "sweep",
                    NewRun {
                        name: Some(format!("trial-{i:02}")),
                        params: vec![(
                            "lr".into(),
                            ["0.1", "0.01", "0.001"][i as usize % 3].into(),
                        )],
                        ..Default::default()
                    },
                )
                .expect("run");
            t.log_metrics(&[MetricPoint {
                run: run.run_id,
                key: "loss".into(),
                step: Some(0),
                ts_us: None,
                value: 1.0 - i as f64 / 100.0,
            }])
            .expect("log");
            runs.push(run.run_id);
        }
        runs
    })
    .await
    .expect("setup");
    let (addr, stop, server) = start(&db, super::super::ApiAccess::Open).await;

    // Sorted by the metric ascending, second page of 10, filtered in MLflow syntax.
    let (status, body) = get(
        addr,
        "/api/v1/experiments/sweep/runs?columns=params.lr&order=metrics.loss&desc=false\
         &limit=5&offset=5&filter=params.lr%20%3D%20%270.1%27",
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    let page = json(&body);
    assert_eq!(page["total"], 10, "{page}");
    let names: Vec<&str> = page["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    let (li, ni) = (
        names
            .iter()
            .position(|n| *n == "metrics.loss")
            .expect("loss column"),
        names
            .iter()
            .position(|n| *n == "name")
            .expect("name column"),
    );
    let rows = page["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 5);
    let losses: Vec<f64> = rows.iter().map(|r| r[li].as_f64().expect("loss")).collect();
    assert!(losses.windows(2).all(|w| w[0] <= w[1]), "{losses:?}");
    // lr = 0.1 are trials 0, 3, …, 27; highest i = lowest loss; the second page of 5
    // starts at the sixth lowest: trial-12.
    assert_eq!(rows[0][ni], "trial-12", "{page}");

    let (status, body) = get(addr, "/api/v1/experiments/sweep/keys").await;
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(json(&body)["metrics"][0], "loss");

    for (path, code) in [
        (
            "/api/v1/experiments/sweep/runs?filter=lr%20%3D%20%3D",
            "400",
        ),
        (
            "/api/v1/experiments/sweep/runs?filter=1%3B%20DROP%20TABLE%20x",
            "400",
        ),
        ("/api/v1/experiments/sweep/runs?order=nope", "400"),
        (
            "/api/v1/experiments/sweep/runs?filter=nope%20%3E%201",
            "400",
        ),
        ("/api/v1/experiments/none/runs", "404"),
        ("/api/v1/experiments?mode=avg", "400"),
        ("/api/v1/events?runs=nope", "400"),
        ("/api/v1/events?kinds=params", "400"),
    ] {
        let (status, body) = get(addr, path).await;
        assert!(status.contains(code), "{path}: {status} {body}");
        assert!(json(&body)["error_code"].is_string(), "{path}: {body}");
    }

    // The best value per experiment.
    let (_, body) = get(addr, "/api/v1/experiments?metric=loss&mode=min").await;
    assert!(
        (json(&body)["experiments"][0]["best"]
            .as_f64()
            .expect("best")
            - 0.71)
            .abs()
            < 1e-9
    );

    // The query box: rows, and no writes; one statement only.
    let (status, body) = get(
        addr,
        "/api/v1/query?sql=SELECT%201%20AS%20x%2C%20%27a%27%20AS%20y",
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    let q = json(&body);
    assert_eq!(q["rows"], serde_json::json!([[1, "a"]]));
    assert_eq!(q["columns"][1]["name"], "y");
    let (status, body) = get(addr, "/api/v1/query?sql=CREATE%20TABLE%20t%20(a%20int)").await;
    assert!(status.contains("403"), "{status} {body}");
    let (status, body) = get(addr, "/api/v1/query?sql=SELECT%201%3B%20SELECT%202").await;
    assert!(status.contains("400"), "{status} {body}");

    // State-changing requests need the CSRF token, even with open access.
    let (status, _, body) = send(
        addr,
        "POST",
        &format!("/api/v1/jobs/{}/cancel", runs[0]),
        &[],
        "",
    )
    .await;
    assert!(status.contains("403"), "{status} {body}");
    let (_, body) = get(addr, "/api/v1/whoami").await;
    let csrf = json(&body)["csrf_token"]
        .as_str()
        .expect("token")
        .to_string();
    let (status, _, body) = send(
        addr,
        "POST",
        &format!("/api/v1/jobs/{}/cancel", runs[0]),
        &[("X-CSRF-Token", &csrf)],
        "",
    )
    .await;
    assert!(
        status.contains("404"),
        "no training of that run: {status} {body}"
    );

    // Open access answers requests addressed to this machine only (DNS rebinding).
    let (status, _, body) = send(
        addr,
        "GET",
        "/api/v1/whoami",
        &[("Host", "evil.example")],
        "",
    )
    .await;
    assert!(status.contains("403"), "{status} {body}");

    // Live events: a stream for one run gets its points as they commit.
    let run = runs[1];
    let path = format!("/api/v1/events?runs={run}");
    let (subscribed, ready) = std::sync::mpsc::channel();
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:5480\r\n\r\n"
        )
        .expect("send");
        let mut lines = BufReader::new(stream).lines();
        let mut seen = Vec::new();
        while let Some(Ok(line)) = lines.next() {
            if line == "event: ready" {
                let _ = subscribed.send(());
            }
            let done = line.starts_with("data: ") && line.contains(r#""type":"metrics""#);
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    // Logged once the stream is subscribed (its `ready` event).
    tokio::task::spawn_blocking(move || ready.recv_timeout(std::time::Duration::from_secs(10)))
        .await
        .expect("wait")
        .expect("the stream said ready");
    let t = db.tracking().clone();
    let other = runs[2];
    tokio::task::spawn_blocking(move || {
        for (r, v) in [(other, 5.0), (run, 7.5)] {
            t.log_metrics(&[MetricPoint {
                run: r,
                key: "loss".into(),
                step: Some(1),
                ts_us: Some(42),
                value: v,
            }])
            .expect("log");
        }
    })
    .await
    .expect("log");
    let seen = reader.await.expect("reader").join("\n");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert!(seen.contains("event: ready"), "{seen}");
    assert!(seen.contains("event: metrics"), "{seen}");
    assert!(seen.contains(r#""value":[7.5]"#), "{seen}");
    assert!(
        !seen.contains(r#""value":[5.0]"#),
        "the other run's point is filtered out: {seen}"
    );

    stop.trigger();
    server.await.expect("task").expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sessions_and_the_read_only_role() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::open_dir(dir.path()).await.expect("open");
    db.session()
        .sql("CREATE USER viewer WITH READONLY PASSWORD 'v-secret'")
        .await
        .expect("user");
    let (addr, stop, server) = start(&db, super::super::ApiAccess::Login).await;

    let (status, body) = get(addr, "/api/v1/experiments").await;
    assert!(status.contains("401"), "{status} {body}");
    // Pages and assets load without a login (the page then asks for one).
    let (status, body) = get(addr, "/experiments/x").await;
    assert!(
        status.contains("200") && body.contains("/assets/app.js"),
        "{status}"
    );
    let (status, _) = get(addr, "/assets/uPlot.iife.min.js").await;
    assert!(status.contains("200"), "{status}");

    for bad in [
        r#"{"user": "viewer", "password": "wrong"}"#,
        r#"{"user": "nobody", "password": "v-secret"}"#,
    ] {
        let (status, _, body) = send(addr, "POST", "/api/v1/login", &[], bad).await;
        assert!(status.contains("401"), "{status} {body}");
    }
    let (status, _, body) = send(addr, "POST", "/api/v1/login", &[], "{").await;
    assert!(status.contains("400"), "{status} {body}");
    let (status, head, body) = send(
        addr,
        "POST",
        "/api/v1/login",
        &[],
        r#"{"user": "viewer", "password": "v-secret"}"#,
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
        .expect("cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    assert!(!cookie_line.contains("Secure"), "not over plain HTTP");
    let session = cookie_line
        .split_once("runbase_session=")
        .and_then(|(_, v)| v.split(';').next())
        .expect("session")
        .to_string();
    let cookie = format!("runbase_session={session}");
    let login = json(&body);
    assert_eq!(login["role"], "readonly");
    let csrf = login["csrf_token"].as_str().expect("csrf").to_string();

    let (status, _, body) = send(
        addr,
        "GET",
        "/api/v1/experiments",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    // A read-only user cannot cancel, even with the token.
    let (status, _, body) = send(
        addr,
        "POST",
        &format!("/api/v1/jobs/{}/cancel", uuid::Uuid::nil()),
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    )
    .await;
    assert!(status.contains("403"), "{status} {body}");
    // A role change applies at once; a password change ends the session.
    db.session()
        .sql("ALTER USER viewer READWRITE")
        .await
        .expect("alter role");
    let (_, _, body) = send(addr, "GET", "/api/v1/whoami", &[("Cookie", &cookie)], "").await;
    assert_eq!(json(&body)["role"], "readwrite", "{body}");
    db.session()
        .sql("ALTER USER viewer PASSWORD 'other-secret'")
        .await
        .expect("alter password");
    let (status, ..) = send(addr, "GET", "/api/v1/whoami", &[("Cookie", &cookie)], "").await;
    assert!(status.contains("401"), "{status}");
    let (status, head, body) = send(
        addr,
        "POST",
        "/api/v1/login",
        &[],
        r#"{"user": "viewer", "password": "other-secret"}"#,
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    let cookie = format!(
        "runbase_session={}",
        head.split_once("runbase_session=")
            .and_then(|(_, v)| v.split(';').next())
            .expect("session")
    );
    let csrf = json(&body)["csrf_token"]
        .as_str()
        .expect("csrf")
        .to_string();

    // A live stream of this session ends when the session does.
    let (subscribed, ready) = std::sync::mpsc::channel();
    let stream_cookie = cookie.clone();
    let stream = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        write!(
            stream,
            "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {stream_cookie}\r\n\
             Connection: close\r\n\r\n"
        )
        .expect("send");
        let mut lines = BufReader::new(stream).lines();
        let mut ended = false;
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if line == "event: ready" {
                        let _ = subscribed.send(());
                    }
                }
                // The server closed the stream.
                None => {
                    ended = true;
                    break;
                }
                Some(Err(_)) => break,
            }
        }
        ended
    });
    tokio::task::spawn_blocking(move || ready.recv_timeout(std::time::Duration::from_secs(10)))
        .await
        .expect("wait")
        .expect("the stream said ready");

    // A made-up session is refused; logout ends the real one.
    let (status, ..) = send(
        addr,
        "GET",
        "/api/v1/whoami",
        &[("Cookie", "runbase_session=forged")],
        "",
    )
    .await;
    assert!(status.contains("401"), "{status}");
    let (status, ..) = send(
        addr,
        "POST",
        "/api/v1/logout",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        "",
    )
    .await;
    assert!(status.contains("200"), "{status}");
    let (status, ..) = send(addr, "GET", "/api/v1/whoami", &[("Cookie", &cookie)], "").await;
    assert!(status.contains("401"), "{status}");
    assert!(
        stream.await.expect("stream reader"),
        "the stream closed after logout, well before its 20 s read timeout"
    );

    stop.trigger();
    server.await.expect("task").expect("serve");
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiments_run_and_downsampled_series_with_csv_and_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::open_dir(dir.path()).await.expect("open");
    let t = db.tracking().clone();
    let run = tokio::task::spawn_blocking(move || {
        t.create_experiment("exp", None).expect("experiment");
        let run = t
            .start_run(
                "exp",
                NewRun {
                    name: Some("r1".into()),
                    params: vec![("lr".into(), "0.1".into())],
                    ..Default::default()
                },
            )
            .expect("run");
        // 20,000 points of a ramp with one spike the downsampling must keep.
        let points: Vec<MetricPoint> = (0..20_000)
            .map(|i| MetricPoint {
                run: run.run_id,
                key: "train/loss".into(),
                step: Some(i),
                ts_us: Some(1_000_000 + i),
                value: if i == 12_345 {
                    99.0
                } else {
                    1.0 / (1.0 + i as f64)
                },
            })
            .collect();
        t.log_metrics(&points).expect("log");
        run.run_id
    })
    .await
    .expect("setup");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, shutdown) = crate::supervisor::shutdown_channel();
    let server = tokio::spawn(super::super::serve(
        db.clone(),
        listener,
        shutdown,
        std::time::Duration::from_secs(5),
        super::super::ApiAccess::Open,
        None,
        super::super::HttpServices::default(),
    ));

    let (status, body) = get(addr, "/api/v1/experiments").await;
    assert!(status.contains("200"), "{status} {body}");
    let e = json(&body);
    assert_eq!(e["experiments"][0]["name"], "exp");
    assert_eq!(e["experiments"][0]["run_count"], 1);
    assert_eq!(e["experiments"][0]["running_count"], 1);

    let (status, body) = get(addr, &format!("/api/v1/runs/{run}")).await;
    assert!(status.contains("200"), "{status} {body}");
    let r = json(&body);
    assert_eq!(r["run"]["name"], "r1");
    assert_eq!(r["params"]["lr"], "0.1");
    assert_eq!(r["metrics"][0]["key"], "train/loss");
    assert_eq!(r["metrics"][0]["step"], 19_999);

    let path = format!("/api/v1/runs/{run}/metric?key=train/loss&points=100");
    let (status, body) = get(addr, &path).await;
    assert!(status.contains("200"), "{status} {body}");
    let s = json(&body);
    assert_eq!(s["total"], 20_000);
    assert_eq!(s["downsampled"], true);
    let values = s["value"].as_array().expect("values");
    assert!(
        values.len() <= 400 && values.len() >= 100,
        "{}",
        values.len()
    );
    assert!(values.iter().any(|v| v == 99.0), "the spike survives");

    // A zoomed range comes back at full resolution.
    let path = format!("/api/v1/runs/{run}/metric?key=train/loss&points=100&from=12300&to=12399");
    let s = json(&get(addr, &path).await.1);
    assert_eq!(s["total"], 100);
    assert_eq!(s["downsampled"], false);
    assert_eq!(s["step"][0], 12_300);

    let path = format!("/api/v1/runs/{run}/metric?key=train/loss&format=csv&from=0&to=2");
    let (status, body) = get(addr, &path).await;
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(
        body,
        "step,timestamp_us,value\n0,1000000,1\n1,1000001,0.5\n2,1000002,0.3333333333333333\n"
    );

    for (path, code, error) in [
        ("/api/v1/runs/nope".to_string(), "400", "invalid_argument"),
        (
            format!("/api/v1/runs/{}", uuid::Uuid::nil()),
            "404",
            "object_not_found",
        ),
        (
            format!("/api/v1/runs/{run}/metric"),
            "400",
            "invalid_argument",
        ),
        (
            format!("/api/v1/runs/{run}/metric?key=k&points=0"),
            "400",
            "invalid_argument",
        ),
        (
            format!("/api/v1/runs/{run}/metric?key=k&x=epoch"),
            "400",
            "invalid_argument",
        ),
        (
            format!("/api/v1/runs/{run}/metric?key=k&points=x"),
            "400",
            "invalid_argument",
        ),
    ] {
        let (status, body) = get(addr, &path).await;
        assert!(status.contains(code), "{path}: {status} {body}");
        assert_eq!(json(&body)["error_code"], error, "{path}");
    }

    stop.trigger();
    server.await.expect("task").expect("serve");

    // With passwords checked, the API needs a login.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, shutdown) = crate::supervisor::shutdown_channel();
    let server = tokio::spawn(super::super::serve(
        db.clone(),
        listener,
        shutdown,
        std::time::Duration::from_secs(5),
        super::super::ApiAccess::Login,
        None,
        super::super::HttpServices::default(),
    ));
    let (status, body) = get(addr, &format!("/api/v1/runs/{run}")).await;
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(json(&body)["error_code"], "authentication_failed");
    stop.trigger();
    server.await.expect("task").expect("serve");
}
