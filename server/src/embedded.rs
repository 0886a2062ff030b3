//! `runbase sql "<statements>"`: run SQL in-process against a data directory.

use datafusion::arrow::util::pretty::pretty_format_batches;
use runbase_engine::QueryOutput;

use crate::config::SqlArgs;
use crate::pg::error::to_pg_error;

/// Runs the statements, printing each result; returns the exit code.
pub async fn run(args: SqlArgs) -> i32 {
    let db = match crate::open_database(&args.common).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return 1;
        }
    };
    let session = db.session();
    let statements = match session.parse(&args.sql) {
        Ok(s) => s,
        Err(e) => return report(&e),
    };
    for statement in statements {
        let output = match session.prepare(statement).await {
            Ok(p) => session.execute(&p, None).await,
            Err(e) => Err(e),
        };
        match output {
            Ok(QueryOutput::Command(tag)) => println!("{tag}"),
            Ok(QueryOutput::CopyIn(mut copy)) => {
                use tokio::io::AsyncReadExt;
                // Piece by piece, so a big load streams through (see `CopyIn::ready`).
                let mut stdin = tokio::io::stdin();
                let mut data = vec![0u8; 1 << 20];
                loop {
                    let n = match stdin.read(&mut data).await {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => return report(&e.into()),
                    };
                    copy.push(&data[..n]);
                    if let Some(feed) = copy.ready() {
                        feed.send().await;
                    }
                }
                match session.finish_copy_in(*copy).await {
                    Ok(tag) => println!("{tag}"),
                    Err(e) => return report(&e),
                }
            }
            Ok(QueryOutput::CopyOut(mut rows, format)) => {
                use futures::StreamExt;
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                while let Some(batch) = rows.next().await {
                    let lines = match batch {
                        Ok(b) => crate::pg::copy::encode_batch(b, &format),
                        Err(e) => return report(&e.into()),
                    };
                    match lines {
                        Ok(lines) => {
                            for l in lines {
                                if out.write_all(&l).is_err() {
                                    return 1;
                                }
                            }
                        }
                        Err(e) => {
                            eprintln!("ERROR:  {e}");
                            return 1;
                        }
                    }
                }
            }
            Ok(rows @ QueryOutput::Rows(_)) => {
                // Reading the rows runs the statement; its NOTICEs (TRAIN's progress) come first.
                let batches = rows.collect().await;
                print_notices(&session);
                let batches = match batches {
                    Ok(b) => b,
                    Err(e) => return report(&e),
                };
                match pretty_format_batches(&batches) {
                    Ok(table) => {
                        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                        println!("{table}\n({n} row{})", if n == 1 { "" } else { "s" });
                    }
                    Err(e) => return report(&runbase_engine::Error::DataFusion(e.into())),
                }
            }
            Err(e) => {
                print_notices(&session);
                return report(&e);
            }
        }
    }
    0
}

/// Prints the NOTICEs statements of `session` queued, as psql does.
fn print_notices(session: &runbase_engine::Session) {
    for m in session.notices().drain() {
        eprintln!("NOTICE:  {m}");
    }
}

fn report(e: &runbase_engine::Error) -> i32 {
    let pg = to_pg_error(e);
    eprintln!("ERROR:  {} (SQLSTATE {})", pg.message, pg.code);
    1
}
