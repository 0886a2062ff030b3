//! Unit tests of the session's pure AST passes: no database, just parsed statements.

use datafusion::common::{ParamValues, ScalarValue};
use datafusion::sql::sqlparser::ast::Statement as AstStatement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::authorize::writing_call;
use super::params::{bind_parameters, table_function_parameters};
use super::query_args::query_arguments;
use super::settings::default_variable;

fn parse(sql: &str) -> AstStatement {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
    assert_eq!(statements.len(), 1, "{sql}");
    statements.remove(0)
}

#[test]
fn writing_calls_are_found_as_scalars_and_table_functions() {
    let writes = |name: &str| name == "log_metric" || name == "train";
    assert_eq!(
        writing_call(&parse("SELECT log_metric('r', 'loss', 1.0)"), &writes).as_deref(),
        Some("log_metric")
    );
    assert_eq!(
        writing_call(&parse("SELECT * FROM train('m', 'SELECT 1', 'y')"), &writes).as_deref(),
        Some("train")
    );
    assert_eq!(
        writing_call(
            &parse("SELECT x FROM t WHERE x IN (SELECT LOG_METRIC('r', 'k', 2))"),
            &writes
        )
        .as_deref(),
        Some("log_metric"),
        "nested and upper-case calls count"
    );
    assert_eq!(writing_call(&parse("SELECT abs(-1), now()"), &writes), None);
}

#[test]
fn table_function_parameters_are_counted_only_in_table_function_arguments() {
    assert_eq!(
        table_function_parameters(&parse("SELECT * FROM predict($1, $2)")),
        Some(2)
    );
    assert_eq!(table_function_parameters(&parse("SELECT $1 + $2")), None);
    assert_eq!(table_function_parameters(&parse("SELECT * FROM t")), None);
}

#[test]
fn parameters_bind_into_table_function_arguments() {
    let mut statement = parse("SELECT * FROM predict($1, $2)");
    bind_parameters(
        &mut statement,
        &ParamValues::List(vec![
            ScalarValue::Utf8(Some("model".into())).into(),
            ScalarValue::Utf8(Some("SELECT 'it''s'".into())).into(),
        ]),
    )
    .expect("binds");
    // Read the bound literals from the AST (sqlparser's Display re-escapes quotes its own way).
    let mut literals = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(&statement, |e| {
        if let datafusion::sql::sqlparser::ast::Expr::Value(v) = e
            && let datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s) = &v.value
        {
            literals.push(s.clone());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    assert_eq!(
        literals,
        vec!["model".to_string(), "SELECT 'it''s'".to_string()]
    );
}

#[test]
fn query_arguments_are_the_string_literals_at_registered_positions() {
    let positions = |f: &str| if f == "predict" { vec![1] } else { vec![] };
    assert_eq!(
        query_arguments(
            &parse("SELECT * FROM predict('m', 'SELECT x FROM t')"),
            positions
        ),
        vec!["SELECT x FROM t".to_string()]
    );
    assert!(query_arguments(&parse("SELECT * FROM other('m', 'SELECT 1')"), positions).is_empty());
    assert!(query_arguments(&parse("SELECT * FROM predict('m', $1)"), positions).is_empty());
}

#[test]
fn settings_have_postgresql_defaults() {
    assert_eq!(default_variable("server_version").as_deref(), Some("16.0"));
    assert_eq!(default_variable("statement_timeout").as_deref(), Some("0"));
    assert_eq!(default_variable("timezone").as_deref(), Some("UTC"));
    assert!(default_variable("version").is_some_and(|v| v.starts_with("PostgreSQL")));
    assert_eq!(default_variable("no_such_setting"), None);
}

#[tokio::test]
async fn a_session_for_an_identity_is_authorized_as_it() -> crate::Result<()> {
    use crate::users::Role;
    let dir = tempfile::tempdir()?;
    let db = crate::Database::open_dir(dir.path()).await?;
    let admin = db.session_for(&crate::Identity::embedded("admin"));
    admin.sql("CREATE TABLE t (x int)").await?;
    let reader = db.session_for(&crate::Identity {
        user: "dashboard".into(),
        role: Role::Readonly,
        application: Some("grafana".into()),
    });
    assert_eq!(reader.role(), Role::Readonly);
    let refused = reader.sql("INSERT INTO t VALUES (1)").await;
    assert!(
        matches!(&refused, Err(e) if e.code() == crate::error::ErrorCode::PermissionDenied),
        "{refused:?}"
    );
    assert_eq!(reader.query("SELECT count(*) FROM t").await?.len(), 1);
    Ok(())
}
