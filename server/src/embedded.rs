//! `runbase sql "<statements>"`: run SQL in-process against a data directory.

use datafusion::arrow::util::pretty::pretty_format_batches;
use runbase_engine::QueryOutput;

use crate::config::SqlArgs;
use crate::error::to_pg_error;

/// Runs the statements, printing each result; returns the exit code.
pub async fn run(args: SqlArgs) -> i32 {
    let db = match crate::open_database(&args.common.data_dir, args.common.query_threads).await {
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
            Ok(rows @ QueryOutput::Rows(_)) => match rows.collect().await {
                Ok(batches) => match pretty_format_batches(&batches) {
                    Ok(table) => {
                        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                        println!("{table}\n({n} row{})", if n == 1 { "" } else { "s" });
                    }
                    Err(e) => return report(&runbase_engine::Error::DataFusion(e.into())),
                },
                Err(e) => return report(&e),
            },
            Err(e) => return report(&e),
        }
    }
    0
}

fn report(e: &runbase_engine::Error) -> i32 {
    let pg = to_pg_error(e);
    eprintln!("ERROR:  {} (SQLSTATE {})", pg.message, pg.code);
    1
}
