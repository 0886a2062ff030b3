//! Online scoring over HTTP: runbase's `/invocations` against MLflow's own scoring server
//! (`mlflow models serve`) on the same TorchScript module, side by side.
//!
//! The module: an MLP (16 → 64 → 64 → 1, regression), made once by PyTorch
//! (bench/python/scoring_load.py), imported into runbase with `import_model` and saved as
//! an MLflow model (pytorch flavour) for MLflow. Each side is driven by the same Python
//! client (requests, keep-alive, one request at a time, MLflow's `dataframe_split` JSON) at
//! 1, 64 and 4,096 rows per request: latency p50/p99 and rows/s. MLflow serves with
//! `--env-manager local` and one worker; its venv gets PyTorch from the test venv (appended
//! to its `sys.path`, so its own packages win). Runs alternate; medians are reported.
//!
//! ```sh
//! source scripts/env.sh
//! cargo build --release --workspace --bins
//! $CARGO_TARGET_DIR/release/compare_scoring            # 2,000 / 500 / 50 requests
//! $CARGO_TARGET_DIR/release/compare_scoring --quick    # a smoke run
//! ```

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use runbase_bench::peers::{
    Mlflow, Runbase, answers_ok, free_port, python_json, python_json_with, stop_group,
};
use runbase_bench::report::{Row, Table, median};

/// Sizes of the comparison.
#[derive(Debug, Parser)]
struct Args {
    /// Requests of one row.
    #[arg(long, default_value_t = 2_000)]
    single: usize,
    /// Requests of 64 rows.
    #[arg(long, default_value_t = 500)]
    small: usize,
    /// Requests of 4,096 rows.
    #[arg(long, default_value_t = 50)]
    large: usize,
    /// Repetitions (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Small sizes for a quick run.
    #[arg(long)]
    quick: bool,
}

const FEATURES: usize = 16;

/// `mlflow models serve` of the model at `model`, on a free port.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start(model: &Path, torch_site: &Path, work: &Path) -> Self {
        // PyTorch from the test venv, appended to the MLflow venv's path.
        let custom = work.join("sitecustomize");
        std::fs::create_dir_all(&custom).expect("mkdir");
        std::fs::write(
            custom.join("sitecustomize.py"),
            format!(
                "import sys\nsys.path.append({:?})\n",
                torch_site.display().to_string()
            ),
        )
        .expect("write sitecustomize");
        let port = free_port();
        let child = Command::new(Mlflow::venv().join("bin").join("mlflow"))
            .args([
                "models",
                "serve",
                "--env-manager",
                "local",
                "--workers",
                "1",
            ])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("-m")
            .arg(model)
            .env("PYTHONPATH", &custom)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start mlflow models serve");
        let mut me = Self { child, port };
        let start = Instant::now();
        while !me.ready() {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("mlflow models serve exited: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "mlflow models serve did not answer /ping within 180 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        me
    }

    fn ready(&self) -> bool {
        answers_ok(self.port, "/ping")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // The whole process group: the server and its workers.
        stop_group(&mut self.child);
    }
}

/// One load run: (p50 ms, p99 ms, rows/s).
fn load(python: &Path, url: &str, batch: usize, requests: usize) -> (f64, f64, f64) {
    let (features, batch, requests) = (
        FEATURES.to_string(),
        batch.to_string(),
        requests.to_string(),
    );
    let argv = [
        "load",
        "--url",
        url,
        "--features",
        &features,
        "--batch",
        &batch,
        "--requests",
        &requests,
    ];
    let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
    let out = python_json_with(python, "scoring_load.py", &argv);
    let get = |k: &str| out[k].as_f64().unwrap_or_else(|| panic!("no {k} in {out}"));
    (get("p50_ms"), get("p99_ms"), get("rows_per_s"))
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.single = args.single.min(100);
        args.small = args.small.min(50);
        args.large = args.large.min(5);
        args.reps = 1;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let features = FEATURES.to_string();
    let made = python_json(
        "scoring_load.py",
        &[
            OsStr::new("make-model"),
            OsStr::new("--out"),
            work.path().as_os_str(),
            OsStr::new("--features"),
            OsStr::new(&features),
        ],
    );
    let pt = PathBuf::from(made["pt"].as_str().expect("pt"));
    let mlflow_model = PathBuf::from(made["mlflow_model"].as_str().expect("mlflow_model"));

    let http = format!("127.0.0.1:{}", free_port());
    let (_runbase, client) =
        Runbase::start_with(true, &[("RUNBASE_HTTP_LISTEN", http.clone())]).await;
    let blob = std::fs::read(&pt).expect("model.pt");
    let inputs: Vec<String> = (0..FEATURES).map(|i| format!("\"f{i}\"")).collect();
    let spec = format!(
        "{{\"inputs\": [{}], \"output\": \"regression\"}}",
        inputs.join(", ")
    );
    client
        .query_one("SELECT import_model('score_mlp', $1, $2)", &[&blob, &spec])
        .await
        .expect("import_model");
    let runbase_url = format!("http://{http}/invocations?model=score_mlp");

    let torch_site = Command::new("python3")
        .args([
            "-c",
            "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))",
        ])
        .output()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .expect("find torch (source scripts/env.sh)");
    let serve = Serve::start(&mlflow_model, &torch_site, work.path());
    let mlflow_url = format!("http://127.0.0.1:{}/invocations", serve.port);
    // The client runs under the test venv's Python for both (it has requests).
    let python = PathBuf::from("python3");

    let sizes = [(1usize, args.single), (64, args.small), (4096, args.large)];
    // [size][side] → runs; side 0 runbase, 1 MLflow.
    let mut results: Vec<[Vec<(f64, f64, f64)>; 2]> =
        sizes.iter().map(|_| [vec![], vec![]]).collect();
    for rep in 0..args.reps {
        for (i, (batch, requests)) in sizes.iter().enumerate() {
            let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let url = if side == 0 { &runbase_url } else { &mlflow_url };
                results[i][side].push(load(&python, url, *batch, *requests));
            }
        }
    }
    let med = |i: usize, side: usize, f: fn(&(f64, f64, f64)) -> f64| {
        median(&results[i][side].iter().map(f).collect::<Vec<_>>())
    };
    let mut table = Table::new(
        "mlflow models serve",
        &format!(
            "Online scoring of one TorchScript MLP ({FEATURES} → 64 → 64 → 1): runbase /invocations vs `mlflow models serve`, one keep-alive client, median of {}",
            args.reps
        ),
    );
    table.push(Row::lower_better(
        "1 row per request: latency p50 (ms)",
        med(0, 0, |r| r.0),
        med(0, 1, |r| r.0),
    ));
    table.push(Row::lower_better(
        "1 row per request: latency p99 (ms)",
        med(0, 0, |r| r.1),
        med(0, 1, |r| r.1),
    ));
    for (i, (batch, _)) in sizes.iter().enumerate() {
        table.push(Row::higher_better(
            &format!("{batch} rows per request (rows/s)"),
            med(i, 0, |r| r.2),
            med(i, 1, |r| r.2),
        ));
    }
    println!("{}", table.markdown());
    drop(serve);
}
