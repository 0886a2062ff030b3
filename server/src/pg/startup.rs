//! Connection start-up: TLS policy, authentication (trust or SCRAM-SHA-256) and the
//! session's role.
//!
//! SCRAM-SHA-256 (RFC 5802/7677, as PostgreSQL speaks it) is checked against the verifier
//! stored in the catalog (`StoredKey`/`ServerKey`, see [`runbase_engine::scram`]): the server
//! never sees or keeps a password. Each connection has its own [`Startup`] with its own
//! exchange state, so concurrent logins cannot mix. An unknown user goes through the same
//! exchange against a random verifier and fails the same way as a wrong password (28P01),
//! so the answer does not tell which users exist.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use runbase_engine::error::ErrorCode;
use runbase_engine::scram::Verifier;
use runbase_engine::users::Role;
use runbase_engine::{Database, Session};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::error::{PgError, to_pg_error};

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMethod {
    /// Any user name is accepted without a password (only allowed on loopback).
    Trust,
    /// SCRAM-SHA-256 against users created with `CREATE USER … PASSWORD`.
    Scram,
}

/// The server-wide start-up policy, shared by every connection.
#[derive(Debug)]
pub struct AuthPolicy {
    /// How clients authenticate.
    pub method: AuthMethod,
    /// Refuse connections that did not negotiate TLS.
    pub require_tls: bool,
    /// Process ids and cancel keys, unique across connections.
    pub keys: RandomPidSecretKeyGenerator,
}

impl AuthPolicy {
    /// A policy.
    pub fn new(method: AuthMethod, require_tls: bool) -> Self {
        Self {
            method,
            require_tls,
            keys: RandomPidSecretKeyGenerator::default(),
        }
    }
}

/// Where one connection's SCRAM exchange stands.
enum Exchange {
    /// Waiting for the start-up message, or for client-first-message after it.
    Start,
    /// server-first-message sent; waiting for client-final-message.
    ServerFirstSent {
        user: String,
        verifier: Verifier,
        known: bool,
        /// `client-first-message-bare "," server-first-message`, the start of AuthMessage.
        auth_prefix: String,
        nonce: String,
    },
}

/// One connection's start-up handler.
pub struct Startup {
    db: Database,
    session: Arc<Session>,
    policy: Arc<AuthPolicy>,
    cancels: Arc<ConnectionManager>,
    exchange: Mutex<Exchange>,
}

fn fatal(code: ErrorCode, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(PgError::new(code, message).fatal()))
}

/// A start-up failure from the engine (reading the user's record, …).
fn fatal_engine(err: &runbase_engine::Error) -> PgWireError {
    PgWireError::UserError(Box::new(to_pg_error(err).fatal()))
}

fn auth_failed(user: &str) -> PgWireError {
    fatal(
        ErrorCode::AuthenticationFailed,
        format!("password authentication failed for user \"{user}\""),
    )
}

fn protocol(message: impl Into<String>) -> PgWireError {
    fatal(ErrorCode::ProtocolViolation, message)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    // The OS generator; if it fails, a connection-unique fallback still differs per call.
    if getrandom::getrandom(&mut b).is_err() {
        let id = uuid::Uuid::new_v4();
        for (i, x) in b.iter_mut().enumerate() {
            *x = id.as_bytes()[i % 16];
        }
    }
    b
}

impl Startup {
    /// The handler for one new connection.
    pub fn new(
        db: Database,
        session: Arc<Session>,
        policy: Arc<AuthPolicy>,
        cancels: Arc<ConnectionManager>,
    ) -> Self {
        Self {
            db,
            session,
            policy,
            cancels,
            exchange: Mutex::new(Exchange::Start),
        }
    }

    /// Authentication succeeded for `user`: set the session's role, register for cancel
    /// requests, and tell the client it may go on.
    async fn admit<C>(&self, client: &mut C, user: &str, role: Role) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session.set_role(user, role);
        let (pid, secret_key) = self.policy.keys.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        self.session.set_backend_pid(pid);
        let (handle, guard) = self.cancels.register(pid, secret_key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        info!(user, %role, tls = client.is_secure(), "authenticated");
        finish_authentication(client, &DefaultServerParameterProvider::default()).await
    }

    fn user_name<C: ClientInfo>(client: &C) -> PgWireResult<String> {
        client
            .metadata()
            .get("user")
            .cloned()
            .filter(|u| !u.is_empty())
            .ok_or(PgWireError::UserNameRequired)
    }

    /// client-first-message: returns server-first-message.
    async fn client_first(&self, user: &str, data: &[u8]) -> PgWireResult<(String, Exchange)> {
        let (bare, client_nonce) = client_first_nonce(data)?;
        let stored = self
            .db
            .users()
            .user(user)
            .map_err(|e| fatal_engine(&e))?
            .and_then(|u| u.verifier)
            .and_then(|v| Verifier::parse(&v));
        let known = stored.is_some();
        // Unknown users (or users without a password) get a throwaway verifier: the
        // exchange looks the same and ends in the same error. Deriving it is PBKDF2
        // (4096 rounds): CPU work, kept off the async workers.
        let verifier = match stored {
            Some(v) => v,
            None => {
                blocking(|| {
                    Verifier::with_salt(
                        &B64.encode(random_bytes(24)),
                        random_bytes(16),
                        runbase_engine::scram::SCRAM_ITERATIONS,
                    )
                })
                .await?
            }
        };
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(18)));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = Exchange::ServerFirstSent {
            user: user.to_string(),
            verifier,
            known,
            auth_prefix: format!("{bare},{server_first}"),
            nonce,
        };
        Ok((server_first, exchange))
    }
}

/// Reads client-first-message: its bare part (after the gs2-header) and the client's nonce.
pub(crate) fn client_first_nonce(data: &[u8]) -> PgWireResult<(&str, &str)> {
    let text = std::str::from_utf8(data).map_err(|_| protocol("SCRAM message is not UTF-8"))?;
    // gs2-header: "n,," (no channel binding) or "y,," (client could, server can't);
    // "p=…" asks for channel binding, which runbase does not offer.
    let bare = match text.split_once(",,") {
        Some(("n" | "y", bare)) => bare,
        Some((h, _)) if h.starts_with("p=") => {
            return Err(protocol("SCRAM channel binding is not supported"));
        }
        _ => return Err(protocol("malformed SCRAM client-first-message")),
    };
    let client_nonce = bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| protocol("SCRAM client-first-message has no nonce"))?;
    Ok((bare, client_nonce))
}

/// Runs CPU-bound start-up work (SCRAM's hashing) on the blocking pool, so that a burst of
/// logins does not stall the async workers serving other connections.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> PgWireResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        fatal(
            ErrorCode::Internal,
            format!("authentication work did not finish: {e}"),
        )
    })
}

/// Checks client-final-message; returns the server signature for server-final-message.
pub(crate) fn client_final(
    data: &[u8],
    verifier: &Verifier,
    auth_prefix: &str,
    nonce: &str,
) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(data).ok()?;
    let (without_proof, proof) = text.rsplit_once(",p=")?;
    let mut binding = None;
    let mut got_nonce = None;
    for attr in without_proof.split(',') {
        if let Some(c) = attr.strip_prefix("c=") {
            binding = Some(c);
        } else if let Some(r) = attr.strip_prefix("r=") {
            got_nonce = Some(r);
        }
    }
    // c= is the base64 gs2-header: "n,," → biws, "y,," → eSws.
    if !matches!(binding, Some("biws" | "eSws")) || got_nonce != Some(nonce) {
        return None;
    }
    let proof = B64.decode(proof).ok()?;
    let auth_message = format!("{auth_prefix},{without_proof}");
    verifier.verify(auth_message.as_bytes(), &proof)
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let user = Self::user_name(client)?;
                if self.policy.require_tls && !client.is_secure() {
                    warn!(user, peer = %client.socket_addr(), "refused: no TLS");
                    self.db.stats().connection_refused("pg", "tls_required");
                    return Err(fatal(
                        ErrorCode::AuthorizationRejected,
                        format!(
                            "connection without TLS refused for user \"{user}\": this server requires TLS (sslmode=require)"
                        ),
                    ));
                }
                match self.policy.method {
                    AuthMethod::Trust => {
                        // Trust authenticates; the catalog still says what the user may do.
                        let role = self
                            .db
                            .users()
                            .user(&user)
                            .map_err(|e| fatal_engine(&e))?
                            .map_or(Role::Superuser, |u| u.role);
                        self.admit(client, &user, role).await
                    }
                    AuthMethod::Scram => {
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                                vec!["SCRAM-SHA-256".to_string()],
                            )))
                            .await?;
                        Ok(())
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                if self.policy.method != AuthMethod::Scram {
                    return Err(protocol("unexpected password message"));
                }
                let user = Self::user_name(client)?;
                let mut exchange = self.exchange.lock().await;
                match &*exchange {
                    Exchange::Start => {
                        // pgwire reads this message's length field unchecked.
                        if let PasswordMessageFamily::Raw(body) = &msg {
                            super::frames::check_sasl_initial(body)
                                .map_err(|e| protocol(e.to_string()))?;
                        }
                        let initial = msg.into_sasl_initial_response()?;
                        if initial.auth_method != "SCRAM-SHA-256" {
                            return Err(fatal(
                                ErrorCode::AuthorizationRejected,
                                format!(
                                    "SASL mechanism {} is not supported (SCRAM-SHA-256 is)",
                                    initial.auth_method
                                ),
                            ));
                        }
                        let data = initial.data.unwrap_or_default();
                        let (server_first, next) = self.client_first(&user, &data).await?;
                        *exchange = next;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into_bytes().into()),
                            ))
                            .await?;
                        Ok(())
                    }
                    Exchange::ServerFirstSent {
                        user: first_user,
                        verifier,
                        known,
                        auth_prefix,
                        nonce,
                    } => {
                        let response = msg.into_sasl_response()?;
                        let checked = {
                            let (verifier, auth_prefix, nonce) =
                                (verifier.clone(), auth_prefix.clone(), nonce.clone());
                            blocking(move || {
                                client_final(&response.data, &verifier, &auth_prefix, &nonce)
                            })
                            .await?
                        };
                        let signature = checked.filter(|_| *known && *first_user == user);
                        let Some(signature) = signature else {
                            warn!(user, peer = %client.socket_addr(), "password authentication failed");
                            self.db
                                .stats()
                                .connection_refused("pg", "authentication_failed");
                            return Err(auth_failed(&user));
                        };
                        // The role is read again: the user may have changed meanwhile.
                        let role = self
                            .db
                            .users()
                            .user(&user)
                            .map_err(|e| fatal_engine(&e))?
                            .map(|u| u.role)
                            .ok_or_else(|| auth_failed(&user))?;
                        *exchange = Exchange::Start;
                        drop(exchange);
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(
                                    format!("v={}", B64.encode(signature)).into_bytes().into(),
                                ),
                            ))
                            .await?;
                        self.admit(client, &user, role).await
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_final_checks_nonce_binding_and_proof() {
        let verifier = Verifier::with_salt("pw", b"salty".to_vec(), 4096);
        let prefix = "n=,r=abc,r=abcdef,s=c2FsdHk=,i=4096";
        let without_proof = "c=biws,r=abcdef";
        let auth = format!("{prefix},{without_proof}");
        let proof = Verifier::client_proof("pw", b"salty", 4096, auth.as_bytes());
        let msg = format!("{without_proof},p={}", B64.encode(proof));
        assert!(client_final(msg.as_bytes(), &verifier, prefix, "abcdef").is_some());
        assert!(client_final(msg.as_bytes(), &verifier, prefix, "abcdeX").is_none());
        let other = msg.replace("c=biws", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws");
        assert!(client_final(other.as_bytes(), &verifier, prefix, "abcdef").is_none());
        let wrong = Verifier::client_proof("px", b"salty", 4096, auth.as_bytes());
        let msg = format!("{without_proof},p={}", B64.encode(wrong));
        assert!(client_final(msg.as_bytes(), &verifier, prefix, "abcdef").is_none());
        assert!(client_final(b"garbage", &verifier, prefix, "abcdef").is_none());
    }
}
