//! The fuzz targets' inputs as a regression test, on stable Rust: every hand-made seed
//! (`fuzz/seeds`), every input the coverage-guided runs kept (`fuzz/corpus`) and every crash
//! they found (`fuzz/regressions`) goes through the same entry points the targets in `fuzz/`
//! call — plus a fixed set of mutations of each seed (bit flips, cuts, splices), so a plain
//! `cargo test` also explores a little past them. A panic fails the test; so does a target
//! none of whose seeds is accepted (the harness would no longer reach the parser's depths).

use std::path::{Path, PathBuf};

type Entry = fn(&[u8]) -> bool;

fn targets() -> Vec<(&'static str, Entry)> {
    use runbase_engine::fuzzing::{CopyKind, copy};
    vec![
        ("pg_frontend", runbase_server::fuzzing::frontend),
        ("http", runbase_server::fuzzing::http),
        ("copy_text", |d| copy(CopyKind::Text, d)),
        ("copy_csv", |d| copy(CopyKind::Csv, d)),
        ("copy_binary", |d| copy(CopyKind::Binary, d)),
        ("sql", runbase_engine::fuzzing::sql),
        ("text_argument", runbase_engine::fuzzing::text_argument),
        ("options", runbase_udfs::fuzzing::options),
    ]
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>`, sorted (none if the directory is absent).
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

/// `count` deterministic mutations of `seed`: bit flips, cut tails, dropped and doubled
/// spans, interesting bytes, the kinds of change libFuzzer starts with.
fn mutations(seed: &[u8], count: usize, mut state: u64) -> Vec<Vec<u8>> {
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut m = seed.to_vec();
        for _ in 0..1 + next() % 3 {
            if m.is_empty() {
                m.push(next() as u8);
                continue;
            }
            let at = (next() as usize) % m.len();
            match next() % 6 {
                0 => m[at] ^= 1 << (next() % 8),
                1 => m.truncate(at),
                2 => {
                    let end = (at + 1 + (next() as usize) % 16).min(m.len());
                    m.drain(at..end);
                }
                3 => {
                    let end = (at + 1 + (next() as usize) % 16).min(m.len());
                    let span = m[at..end].to_vec();
                    m.splice(at..at, span);
                }
                4 => m[at] = [0, 0xff, 0x7f, 0x80, b'\\', b'"', b',', b'\n'][(next() % 8) as usize],
                _ => m.insert(at, next() as u8),
            }
        }
        out.push(m);
    }
    out
}

/// Runs `entry` on `data`; a panic is re-raised naming the input, so it can be replayed.
fn run(target: &str, entry: Entry, what: &dyn std::fmt::Display, data: &[u8]) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry(data))).unwrap_or_else(|_| {
        let shown: String = data.escape_ascii().to_string().chars().take(400).collect();
        panic!("the {target} target panicked on {what}: b\"{shown}\"")
    })
}

#[test]
fn every_kept_fuzz_input_and_mutations_of_every_seed_run_without_panicking() {
    let mut report = Vec::new();
    for (target, entry) in targets() {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "no seeds for {target} in fuzz/seeds");
        let accepted = seeds
            .iter()
            .filter(|(p, d)| run(target, entry, &p.display(), d))
            .count();
        assert!(
            accepted > 0,
            "none of the {} seeds of {target} is accepted: the target no longer reaches its parser",
            seeds.len()
        );
        let mut ran = seeds.len();
        for kind in ["corpus", "regressions"] {
            for (path, data) in inputs(kind, target) {
                run(target, entry, &path.display(), &data);
                ran += 1;
            }
        }
        // The HTTP target writes to a database per request, and the SQL target has 300
        // seeds (the bad-input corpus): fewer mutations of each.
        let per_seed = match target {
            "http" => 8,
            "sql" => 16,
            _ => 64,
        };
        for (i, (path, seed)) in seeds.iter().enumerate() {
            for (j, m) in mutations(seed, per_seed, 0x9e37_79b9 ^ (i as u64 + 1))
                .iter()
                .enumerate()
            {
                let what = format!("mutation {j} of {}", path.display());
                run(target, entry, &what, m);
                ran += 1;
            }
        }
        report.push(format!(
            "{target}: {ran} inputs, {accepted}/{} seeds accepted",
            seeds.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
}
