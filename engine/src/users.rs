//! Users, their roles and their SCRAM-SHA-256 verifiers.
//!
//! Users live in the catalog's `users` column family, keyed by name, as JSON. A password is
//! never stored: only PostgreSQL's SCRAM-SHA-256 verifier
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802/7677), from which
//! the server can check a client's proof but nobody can log in. A password given already in
//! that form (psql's `\password` sends one) is stored as is.
//!
//! Roles are coarse on purpose: a `superuser` manages users and does everything, a
//! `readwrite` user does everything else, a `readonly` user (for dashboards and BI tools)
//! can read every table and change nothing. See [`Role`] and
//! [`crate::Session`]'s authorization of each statement.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The column family holding users.
pub(crate) const CF_USERS: &str = "users";

/// PBKDF2 iterations for new verifiers (PostgreSQL's default).
pub const SCRAM_ITERATIONS: u32 = 4096;

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

/// A SCRAM-SHA-256 verifier: what the server keeps instead of a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block of output: SCRAM's `Hi()`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn from_password(password: &str) -> Result<Self> {
        let mut salt = vec![0u8; 16];
        getrandom::getrandom(&mut salt)
            .map_err(|e| Error::Internal(format!("no randomness for a salt: {e}")))?;
        Ok(Self::with_salt(password, salt, SCRAM_ITERATIONS))
    }

    /// A verifier for `password` with `salt` and `iterations`.
    pub fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        // SASLprep of ASCII passwords is the identity; like libpq, other passwords are
        // used as their UTF-8 bytes.
        let salted = hi(password.as_bytes(), &salt, iterations.max(1));
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Parses PostgreSQL's `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |s: &str| -> Option<[u8; 32]> { B64.decode(s).ok()?.try_into().ok() };
        Some(Self {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: B64.decode(salt).ok().filter(|s| !s.is_empty())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Checks a client's proof for `auth_message`; on success returns the server
    /// signature the client expects back (`v=` of server-final-message).
    pub fn verify(&self, auth_message: &[u8], proof: &[u8]) -> Option<[u8; 32]> {
        let client_signature = hmac(&self.stored_key, auth_message);
        if proof.len() != 32 {
            return None;
        }
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        // Constant-time comparison: the difference of every byte is folded in.
        let diff = stored
            .iter()
            .zip(self.stored_key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then(|| hmac(&self.server_key, auth_message))
    }

    /// A client proof for `auth_message` from `password` (what a client computes; for
    /// tests and the CLI's self-check).
    pub fn client_proof(
        password: &str,
        salt: &[u8],
        iterations: u32,
        auth_message: &[u8],
    ) -> [u8; 32] {
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let signature = hmac(&stored, auth_message);
        let mut proof = [0u8; 32];
        for i in 0..32 {
            proof[i] = client_key[i] ^ signature[i];
        }
        proof
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// A verifier for what a `PASSWORD` clause gave: a SCRAM verifier is kept as is, anything
/// else is a cleartext password and is hashed. MD5 hashes are refused.
pub fn verifier_for(password: &str) -> Result<String> {
    if password.starts_with("SCRAM-SHA-256$") {
        return Verifier::parse(password)
            .map(|v| v.to_string())
            .ok_or_else(|| Error::InvalidArgument("malformed SCRAM-SHA-256 verifier".into()));
    }
    if password.len() == 35 && password.starts_with("md5") {
        return Err(Error::InvalidArgument(
            "MD5 password hashes are not accepted; give the password or a SCRAM-SHA-256 verifier"
                .into(),
        ));
    }
    if password.is_empty() {
        return Err(Error::InvalidArgument(
            "a password must not be empty".into(),
        ));
    }
    Ok(Verifier::from_password(password)?.to_string())
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

impl crate::tracking::Tracking {
    /// The user `name`, if there is one.
    pub fn user(&self, name: &str) -> Result<Option<User>> {
        let Some(bytes) = self.db().get_cf(self.cf(CF_USERS)?, name.as_bytes())? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt("user record", e.to_string()))
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(CF_USERS)?, rocksdb::IteratorMode::Start)
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
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        self.db()
            .put_cf_opt(self.cf(CF_USERS)?, user.name.as_bytes(), bytes, &write)?;
        Ok(())
    }

    /// Creates a user; 42710 if it exists (unless `if_not_exists`). Returns whether it
    /// was created.
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
            created_at: crate::tracking::now_us(),
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
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        self.db()
            .delete_cf_opt(self.cf(CF_USERS)?, name.as_bytes(), &write)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_round_trip_and_check_proofs() -> Result<()> {
        let v = Verifier::from_password("s3cret")?;
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert!(!text.contains("s3cret"));
        let parsed = Verifier::parse(&text).ok_or_else(|| Error::Internal("parse".into()))?;
        assert_eq!(parsed, v);
        let msg = b"n=alice,r=abc,r=abcdef,s=c2FsdA==,i=4096,c=biws,r=abcdef";
        let proof = Verifier::client_proof("s3cret", &v.salt, v.iterations, msg);
        assert!(v.verify(msg, &proof).is_some());
        let wrong = Verifier::client_proof("s3cret!", &v.salt, v.iterations, msg);
        assert!(v.verify(msg, &wrong).is_none());
        assert!(v.verify(msg, &proof[..31]).is_none());
        Ok(())
    }

    #[test]
    fn matches_rfc_7677_test_vector() {
        // RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap_or_default();
        let v = Verifier::with_salt("pencil", salt, 4096);
        let auth = b"n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap_or_default();
        let server = v.verify(auth, &proof);
        assert_eq!(
            server.map(|s| B64.encode(s)).as_deref(),
            Some("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        );
    }

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
