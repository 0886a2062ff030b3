//! SCRAM-SHA-256 verifiers (RFC 5802/7677): what runbase keeps instead of a password.
//!
//! A verifier, in PostgreSQL's form `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`,
//! lets the server check a client's proof, but nobody can log in with it. Deriving one
//! runs PBKDF2 for 4096 rounds: callers on an async runtime run it on a blocking thread.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// PBKDF2 iterations for new verifiers (PostgreSQL's default).
pub const SCRAM_ITERATIONS: u32 = 4096;

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
}
