//! Users and their roles: [`Users`], the store both front ends authenticate against
//! (`db.users()`), and the `CREATE`/`ALTER`/`DROP USER` statements.
//!
//! Users live in RocksDB's `users` column family, keyed by name, as JSON. A password is
//! never stored: only its SCRAM-SHA-256 verifier ([`crate::scram`]), from which the server
//! can check a client's proof but nobody can log in. A password given already in that form
//! (psql's `\password` sends one) is stored as is.
//!
//! Roles are coarse on purpose: a `superuser` manages users and does everything, a
//! `readwrite` user does everything else, a `readonly` user (for dashboards and BI tools)
//! can read every table and change nothing. See [`Role`] and
//! [`crate::Session`]'s authorization of each statement.

use std::fmt;

use std::sync::Arc;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kv::{Durability, Kv};

/// The column family holding users.
pub(crate) const CF_USERS: &str = "users";

/// The column families this module keeps.
pub(crate) fn column_families() -> Vec<rocksdb::ColumnFamilyDescriptor> {
    let mut opts = rocksdb::Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    vec![rocksdb::ColumnFamilyDescriptor::new(CF_USERS, opts)]
}

/// Longest user name, as PostgreSQL's identifiers (63 bytes).
const MAX_NAME_LEN: usize = 63;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including `CREATE`/`ALTER`/`DROP USER`.
    Superuser,
    /// Everything but managing users.
    Readwrite,
    /// Queries only: no DDL, DML, `COPY … FROM`, logging, training or model changes.
    Readonly,
}

impl Role {
    /// The name shown in `runbase.users`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Superuser => "superuser",
            Role::Readwrite => "readwrite",
            Role::Readonly => "readonly",
        }
    }

    /// Parses `superuser`, `readwrite` or `readonly`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "superuser" => Ok(Role::Superuser),
            "readwrite" => Ok(Role::Readwrite),
            "readonly" => Ok(Role::Readonly),
            other => Err(Error::InvalidArgument(format!(
                "unknown role \"{other}\": expected superuser, readwrite or readonly"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The login name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The SCRAM-SHA-256 verifier; None: the user cannot log in with a password.
    pub verifier: Option<String>,
    /// When the user was created (microseconds since the Unix epoch).
    pub created_at: i64,
}

/// Checks a user name: 1–63 bytes, no NUL.
pub fn validate_user_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "invalid user name \"{name}\""
        )));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::ValueTooLong(format!(
            "user name is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

/// A user-management statement. PostgreSQL's spellings are accepted:
///
/// ```sql
/// CREATE USER | ROLE [IF NOT EXISTS] name [[WITH] option ...]
/// ALTER USER | ROLE name [[WITH] option ...]
/// DROP USER | ROLE [IF EXISTS] name [, ...]
/// ```
///
/// with the options `PASSWORD 'text'` (a password or a SCRAM-SHA-256 verifier),
/// `PASSWORD NULL`, `SUPERUSER`, `NOSUPERUSER` (read-write), `READONLY`, `READWRITE`,
/// `IN ROLE pg_read_all_data` (read-only, as PostgreSQL's predefined role), and `LOGIN`,
/// `NOLOGIN`, `INHERIT`, `NOINHERIT`, which change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// `CREATE USER`.
    Create {
        /// The name.
        name: String,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// The role (default: read-write).
        role: Option<Role>,
        /// `PASSWORD`: `Some(None)` for `PASSWORD NULL`.
        password: Option<Option<String>>,
    },
    /// `ALTER USER`.
    Alter {
        /// The name.
        name: String,
        /// A new role.
        role: Option<Role>,
        /// A new password: `Some(None)` removes it.
        password: Option<Option<String>>,
    },
    /// `DROP USER`.
    Drop {
        /// The names.
        names: Vec<String>,
        /// `IF EXISTS`.
        if_exists: bool,
    },
}

/// One statement of a script that holds user-management statements.
#[derive(Debug)]
pub enum Chunk {
    /// A user-management statement, or why it is malformed (42601).
    User(Result<UserCommand>),
    /// Any other statement's text, for the SQL parser.
    Sql(String),
}

/// Splits `sql` into statements when one of them manages users; None when none does (or
/// `sql` does not tokenize), so that the SQL parser sees the text untouched.
pub fn split_user_commands(sql: &str) -> Option<Vec<Chunk>> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut statements: Vec<Vec<Token>> = vec![vec![]];
    for t in tokens {
        match t {
            Token::SemiColon => statements.push(vec![]),
            t => statements.last_mut()?.push(t),
        }
    }
    let is_user = |tokens: &[Token]| {
        let words: Vec<String> = tokens
            .iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .take(2)
            .map(|t| t.to_string().to_ascii_uppercase())
            .collect();
        matches!(
            (
                words.first().map(String::as_str),
                words.get(1).map(String::as_str)
            ),
            (Some("CREATE" | "ALTER" | "DROP"), Some("USER" | "ROLE"))
        )
    };
    if !statements.iter().any(|s| is_user(s)) {
        return None;
    }
    Some(
        statements
            .into_iter()
            .filter(|s| s.iter().any(|t| !matches!(t, Token::Whitespace(_))))
            .map(|s| {
                if is_user(&s) {
                    Chunk::User(parse_user_command(&s))
                } else {
                    Chunk::Sql(s.iter().map(ToString::to_string).collect())
                }
            })
            .collect(),
    )
}

fn parse_user_command(
    tokens: &[datafusion::sql::sqlparser::tokenizer::Token],
) -> Result<UserCommand> {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let tokens: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let syntax = |msg: String| Error::Syntax(msg);
    let mut at = 0usize;
    let word = |i: usize| -> Option<String> {
        match tokens.get(i) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    };
    let name = |i: usize| -> Result<String> {
        match tokens.get(i) {
            Some(Token::Word(w)) if w.quote_style.is_some() => Ok(w.value.clone()),
            // Unquoted identifiers fold to lower case, as in PostgreSQL.
            Some(Token::Word(w)) => Ok(w.value.to_lowercase()),
            Some(Token::SingleQuotedString(s)) => Ok(s.clone()),
            other => Err(syntax(format!(
                "expected a user name, found {}",
                other.map_or("the end".to_string(), |t| t.to_string())
            ))),
        }
    };
    let verb = word(0).unwrap_or_default();
    at += 2;
    let mut flag = |words: &[&str]| -> bool {
        let hit = words
            .iter()
            .enumerate()
            .all(|(k, w)| word(at + k).as_deref() == Some(*w));
        if hit {
            at += words.len();
        }
        hit
    };
    if verb == "DROP" {
        let if_exists = flag(&["IF", "EXISTS"]);
        let mut names = vec![name(at)?];
        at += 1;
        while matches!(tokens.get(at), Some(Token::Comma)) {
            names.push(name(at + 1)?);
            at += 2;
        }
        if let Some(extra) = tokens.get(at) {
            return Err(syntax(format!("unexpected {extra} in DROP USER")));
        }
        return Ok(UserCommand::Drop { names, if_exists });
    }
    let if_not_exists = verb == "CREATE" && flag(&["IF", "NOT", "EXISTS"]);
    let user = name(at)?;
    at += 1;
    if word(at).as_deref() == Some("WITH") {
        at += 1;
    }
    let mut role = None;
    let mut password = None;
    while at < tokens.len() {
        let option =
            word(at).ok_or_else(|| syntax(format!("unexpected {} in {verb} USER", tokens[at])))?;
        at += 1;
        match option.as_str() {
            "PASSWORD" => {
                password = Some(match tokens.get(at) {
                    Some(Token::SingleQuotedString(p) | Token::EscapedStringLiteral(p)) => {
                        Some(p.clone())
                    }
                    Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("NULL") => None,
                    _ => return Err(syntax("PASSWORD takes a string or NULL".into())),
                });
                at += 1;
            }
            "SUPERUSER" => role = Some(Role::Superuser),
            "NOSUPERUSER" | "READWRITE" => role = Some(Role::Readwrite),
            "READONLY" => role = Some(Role::Readonly),
            "IN" if word(at).as_deref() == Some("ROLE") => {
                let granted = name(at + 1)?;
                at += 2;
                if granted != "pg_read_all_data" {
                    return Err(Error::NotSupported(format!(
                        "IN ROLE {granted} (runbase's roles are SUPERUSER, READWRITE and READONLY; IN ROLE pg_read_all_data means READONLY)"
                    )));
                }
                role = Some(Role::Readonly);
            }
            "LOGIN" | "NOLOGIN" | "INHERIT" | "NOINHERIT" => {}
            other => {
                return Err(Error::NotSupported(format!(
                    "{verb} USER option {other} (runbase takes PASSWORD, SUPERUSER, NOSUPERUSER, READWRITE, READONLY)"
                )));
            }
        }
    }
    Ok(match verb.as_str() {
        "CREATE" => UserCommand::Create {
            name: user,
            if_not_exists,
            role,
            password,
        },
        _ => UserCommand::Alter {
            name: user,
            role,
            password,
        },
    })
}

/// The users of a database. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    kv: Kv,
    /// Serializes the read-check-write of user changes.
    lock: Arc<std::sync::Mutex<()>>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users").finish_non_exhaustive()
    }
}

impl Users {
    pub(crate) fn new(kv: Kv) -> Self {
        Self {
            kv,
            lock: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user `name`, if there is one.
    pub fn user(&self, name: &str) -> Result<Option<User>> {
        let Some(bytes) = self
            .kv
            .db()
            .get_cf(self.kv.cf(CF_USERS)?, name.as_bytes())?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt("user record", e.to_string()))
    }

    /// Checks `password` against `name`'s verifier: the user (role, verifier) if it
    /// matches, `None` if the user does not exist, has no password or the password is
    /// wrong (one answer for all three, so a caller cannot tell which). Runs PBKDF2 (thousands of rounds):
    /// blocking work, kept off async workers.
    pub fn check_password(&self, name: &str, password: &str) -> Result<Option<User>> {
        let user = self.user(name)?;
        let verifier = user
            .as_ref()
            .and_then(|u| u.verifier.as_deref())
            .and_then(crate::scram::Verifier::parse);
        let (Some(user), Some(verifier)) = (user, verifier) else {
            // As much work as a real check, so the time taken does not tell which user
            // names exist.
            let _ = crate::scram::Verifier::with_salt(
                password,
                b"runbase-no-such-user".to_vec(),
                crate::scram::SCRAM_ITERATIONS,
            );
            return Ok(None);
        };
        let derived =
            crate::scram::Verifier::with_salt(password, verifier.salt.clone(), verifier.iterations);
        // Constant-time comparison of the two keys.
        let diff = derived
            .stored_key
            .iter()
            .zip(verifier.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        Ok((diff == 0).then_some(user))
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        let mut out = Vec::new();
        for item in self
            .kv
            .db()
            .iterator_cf(self.kv.cf(CF_USERS)?, rocksdb::IteratorMode::Start)
        {
            let (_, v) = item?;
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| Error::corrupt("user record", e.to_string()))?,
            );
        }
        Ok(out)
    }

    fn put_user(&self, user: &User) -> Result<()> {
        let bytes = serde_json::to_vec(user).map_err(|e| Error::Internal(e.to_string()))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.kv.cf(CF_USERS)?, user.name.as_bytes(), bytes);
        self.kv.write(batch, Durability::Synced)
    }

    /// Creates a user; 42710 if it exists (unless `if_not_exists`). Returns whether it
    /// was created. Synced; call it off the async workers (it waits for the disk).
    pub fn create_user(
        &self,
        name: &str,
        role: Role,
        verifier: Option<String>,
        if_not_exists: bool,
    ) -> Result<bool> {
        validate_user_name(name)?;
        let _guard = self.lock();
        if self.user(name)?.is_some() {
            return if if_not_exists {
                Ok(false)
            } else {
                Err(Error::DuplicateObject(format!(
                    "role \"{name}\" already exists"
                )))
            };
        }
        self.put_user(&User {
            name: name.to_string(),
            role,
            verifier,
            created_at: chrono::Utc::now().timestamp_micros(),
        })?;
        Ok(true)
    }

    /// Changes a user's role and/or verifier (`Some(None)` removes the password).
    pub fn alter_user(
        &self,
        name: &str,
        role: Option<Role>,
        verifier: Option<Option<String>>,
    ) -> Result<()> {
        let _guard = self.lock();
        let mut user = self
            .user(name)?
            .ok_or_else(|| Error::ObjectNotFound(format!("role \"{name}\" does not exist")))?;
        if let Some(role) = role {
            user.role = role;
        }
        if let Some(verifier) = verifier {
            user.verifier = verifier;
        }
        self.put_user(&user)
    }

    /// Drops a user; 42704 if there is none (unless `if_exists`).
    pub fn drop_user(&self, name: &str, if_exists: bool) -> Result<()> {
        let _guard = self.lock();
        if self.user(name)?.is_none() {
            return if if_exists {
                Ok(())
            } else {
                Err(Error::ObjectNotFound(format!(
                    "role \"{name}\" does not exist"
                )))
            };
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.kv.cf(CF_USERS)?, name.as_bytes());
        self.kv.write(batch, Durability::Synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::verifier_for;

    fn users(sql: &str) -> Vec<String> {
        split_user_commands(sql)
            .unwrap_or_default()
            .into_iter()
            .map(|c| match c {
                Chunk::User(u) => format!("{u:?}"),
                Chunk::Sql(s) => format!("sql: {}", s.trim()),
            })
            .collect()
    }

    #[test]
    fn parses_user_statements() {
        assert!(split_user_commands("SELECT 1; CREATE TABLE users (x int)").is_none());
        let got = users(
            "CREATE USER bi WITH PASSWORD 'it''s' IN ROLE pg_read_all_data; SELECT 1;\
             ALTER ROLE \"Ann\" SUPERUSER; DROP USER IF EXISTS a, b",
        );
        assert_eq!(
            got,
            vec![
                "Ok(Create { name: \"bi\", if_not_exists: false, role: Some(Readonly), password: Some(Some(\"it's\")) })",
                "sql: SELECT 1",
                "Ok(Alter { name: \"Ann\", role: Some(Superuser), password: None })",
                "Ok(Drop { names: [\"a\", \"b\"], if_exists: true })",
            ]
        );
        let bad = users("CREATE USER x CREATEDB");
        assert!(bad[0].contains("CREATEDB"), "{bad:?}");
        let bad = users("CREATE USER x PASSWORD 42");
        assert!(bad[0].contains("PASSWORD takes"), "{bad:?}");
        let bad = users("DROP USER");
        assert!(bad[0].starts_with("Err"), "{bad:?}");
    }

    #[test]
    fn password_clauses() {
        assert!(verifier_for("").is_err());
        assert!(verifier_for("md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(verifier_for("SCRAM-SHA-256$x").is_err());
        let v = verifier_for("pw").unwrap_or_default();
        assert_eq!(verifier_for(&v).ok(), Some(v));
        assert!(validate_user_name(&"x".repeat(64)).is_err());
        assert_eq!(Role::parse("ReadOnly").ok(), Some(Role::Readonly));
    }
}
