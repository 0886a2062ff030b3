//! Who an HTTP request acts as.
//!
//! - [`ApiAccess::Open`] (the server trusts every client, which it allows only on
//!   loopback): every request is the superuser `runbase`, no login.
//! - [`ApiAccess::Login`] (the server checks passwords): `POST /api/v1/login` checks a user
//!   name and password against the same users as PostgreSQL and sets a session cookie
//!   (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS); every API request must carry it.
//!
//! Either way a state-changing request (anything but GET and HEAD) must also send the
//! session's CSRF token in the `X-CSRF-Token` header (from the login answer or
//! `GET /api/v1/whoami`): a page of another site can make the browser send the cookie,
//! but cannot read the token nor send a custom header without a CORS preflight, which
//! this server never grants. The read-only role reads everything and changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use runbase_engine::error::ErrorCode;
use runbase_engine::users::Role;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};

/// The cookie that carries a dashboard session.
pub const SESSION_COOKIE: &str = "runbase_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// Who may use the API and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiAccess {
    /// Anyone who reaches the port (trust authentication, which only listens on loopback).
    Open,
    /// Users who logged in with their PostgreSQL user name and password.
    Login,
}

/// Password checks running at once (each is thousands of hash rounds on the blocking
/// pool); more wait, so a flood of logins cannot starve other work.
const CONCURRENT_LOGINS: usize = 4;

/// One logged-in browser.
#[derive(Debug, Clone)]
struct WebSession {
    user: String,
    csrf: String,
    expires: Instant,
    /// The user's verifier at login: a changed password (or a dropped and re-created
    /// user) ends the session.
    verifier: Option<String>,
}

/// The logged-in sessions, and the CSRF token of open access.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, WebSession>>,
    open_csrf: String,
    /// Whether cookies get `Secure` (HTTP is served over TLS).
    secure: bool,
    logins: tokio::sync::Semaphore,
    /// Basic-auth credentials verified lately: SHA-256 of `user NUL password` → the user
    /// and its verifier then, until when. A client sends them with every request, and a
    /// check costs thousands of hash rounds.
    basic: Mutex<HashMap<[u8; 32], Verified>>,
}

/// Basic-auth credentials checked lately: the user, its verifier then, valid until when.
type Verified = (String, Option<String>, Instant);

/// How long verified basic-auth credentials are taken without checking them again.
const BASIC_TTL: Duration = Duration::from_secs(60);
/// Most credentials remembered.
const MAX_BASIC: usize = 10_000;

/// A fresh unguessable token (two v4 UUIDs: 244 random bits from the OS).
fn token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// No sessions yet; cookies get `Secure` when `secure`.
    pub fn new(secure: bool) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            open_csrf: token(),
            secure,
            logins: tokio::sync::Semaphore::new(CONCURRENT_LOGINS),
            basic: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WebSession>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn create(&self, user: String, verifier: Option<String>) -> (String, WebSession) {
        let session = WebSession {
            user,
            csrf: token(),
            expires: Instant::now() + SESSION_TTL,
            verifier,
        };
        let id = token();
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    fn get(&self, id: &str) -> Option<WebSession> {
        let map = self.lock();
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Session `id` and its user's role as they are now: `None` once it expired, logged
    /// out, or its user was dropped or changed password (which also ends it). A changed
    /// role applies at once.
    fn current(
        &self,
        id: &str,
        db: &runbase_engine::Database,
    ) -> Result<Option<(WebSession, Role)>, ApiError> {
        let Some(session) = self.get(id) else {
            return Ok(None);
        };
        let user = db.users().user(&session.user)?;
        match user.filter(|u| u.verifier == session.verifier) {
            Some(u) => Ok(Some((session, u.role))),
            None => {
                self.remove(id);
                Ok(None)
            }
        }
    }

    /// Resolves once the session of `viewer` ends (never under open access): checked
    /// every couple of seconds, so a live stream stops soon after its logout.
    pub fn ended(
        self: &Arc<Self>,
        viewer: &Viewer,
        db: runbase_engine::Database,
    ) -> impl std::future::Future<Output = ()> + Send + use<> {
        let sessions = self.clone();
        let id = viewer.session.clone();
        async move {
            let Some(id) = id else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if !matches!(sessions.current(&id, &db), Ok(Some(_))) {
                    return;
                }
            }
        }
    }

    fn cookie(&self, value: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            max_age.as_secs()
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// Whether the request's Host is a loopback name (any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The session cookie's value in `headers`, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// The user a request acts as. Extracting it refuses requests without a valid session
/// (401) and state-changing requests without the CSRF token (403).
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The user name.
    pub user: String,
    /// What the user may do.
    pub role: Role,
    csrf: String,
    /// The login session the request came with (none under open access).
    session: Option<String>,
}

impl Viewer {
    /// Refuses the read-only role (403): for endpoints that change something.
    pub fn writer(&self) -> Result<(), ApiError> {
        if self.role == Role::Readonly {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!("user \"{}\" is read-only", self.user),
            ));
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let viewer = match state.api {
            ApiAccess::Open => {
                // Open access is for this machine: a page of another site that rebinds
                // its name to 127.0.0.1 sends its own name as Host and is refused.
                if !loopback_host(&parts.headers) {
                    return Err(ApiError::new(
                        ErrorCode::PermissionDenied,
                        "without --auth scram the API answers only requests addressed to \
                         localhost, 127.0.0.1 or [::1]",
                    ));
                }
                Viewer {
                    user: "runbase".into(),
                    role: Role::Superuser,
                    csrf: state.sessions.open_csrf.clone(),
                    session: None,
                }
            }
            ApiAccess::Login => {
                let login_first = || {
                    ApiError::new(
                        ErrorCode::AuthenticationFailed,
                        "log in first: POST /api/v1/login with your user name and password",
                    )
                };
                let id = session_cookie(&parts.headers).ok_or_else(login_first)?;
                let (session, role) = state
                    .sessions
                    .current(id, &state.db)?
                    .ok_or_else(login_first)?;
                Viewer {
                    user: session.user,
                    role,
                    csrf: session.csrf,
                    session: Some(id.to_string()),
                }
            }
        };
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if sent.is_empty() || sent != viewer.csrf {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    "missing or wrong X-CSRF-Token header (GET /api/v1/whoami gives it)",
                ));
            }
        }
        Ok(viewer)
    }
}

/// The body of [`login`].
#[derive(Debug, Deserialize)]
pub(super) struct LoginRequest {
    user: String,
    password: String,
}

/// `POST /api/v1/login` with `{"user", "password"}`: checks them against the database's
/// users (on the blocking pool: the check runs thousands of hash rounds) and sets the
/// session cookie; answers the user, role and CSRF token.
pub(super) async fn login(
    State(state): State<AppState>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if state.api == ApiAccess::Open {
        return Ok(Json(json!({
            "user": "runbase",
            "role": Role::Superuser.as_str(),
            "csrf_token": state.sessions.open_csrf,
            "login_required": false,
        }))
        .into_response());
    }
    let _permit = state
        .sessions
        .logins
        .acquire()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("login queue: {e}")))?;
    let users = state.db.users().clone();
    let user = request.user.clone();
    let checked =
        tokio::task::spawn_blocking(move || users.check_password(&user, &request.password))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("checking password: {e}")))??;
    let Some(checked) = checked else {
        state
            .db
            .stats()
            .connection_refused("http", "authentication_failed");
        return Err(ApiError::new(
            ErrorCode::AuthenticationFailed,
            "wrong user name or password",
        ));
    };
    let role = checked.role;
    let (id, session) = state.sessions.create(request.user, checked.verifier);
    let mut response = Json(json!({
        "user": session.user,
        "role": role.as_str(),
        "csrf_token": session.csrf,
        "login_required": true,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, state.sessions.cookie(&id, SESSION_TTL));
    Ok(response)
}

/// `POST /api/v1/logout`: ends the session and clears the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    _viewer: Viewer,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = session_cookie(&headers) {
        state.sessions.remove(id);
    }
    let mut response = Json(json!({ "logged_out": true })).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        state.sessions.cookie("", Duration::ZERO),
    );
    response
}

/// `GET /api/v1/whoami`: the user, role and CSRF token of this session (401 before login).
pub(super) async fn whoami(State(state): State<AppState>, viewer: Viewer) -> Response {
    Json(json!({
        "user": viewer.user,
        "role": viewer.role.as_str(),
        "csrf_token": viewer.csrf,
        "login_required": state.api == ApiAccess::Login,
    }))
    .into_response()
}

/// Who an MLflow request acts as. Under open access, anyone on this machine (the Host
/// must be a loopback name, as for the API); under login, HTTP basic auth against the
/// database's users (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`), verified
/// credentials remembered for a minute. No CSRF token: MLflow's routes take only
/// `application/json` bodies (and PUT for artifacts), which a page of another site cannot
/// send without a CORS preflight this server never grants.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user name; `None` under open access.
    pub user: Option<String>,
    /// What the user may do.
    pub role: Role,
}

impl Caller {
    /// Refuses the read-only role (403).
    pub fn writer(&self) -> Result<(), super::error::MlflowError> {
        if self.role == Role::Readonly {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "user \"{}\" is read-only",
                    self.user.as_deref().unwrap_or("")
                ),
            )
            .into());
        }
        Ok(())
    }
}

/// `user:password` from an `Authorization: Basic …` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        use super::error::MlflowError;
        match state.api {
            ApiAccess::Open => {
                if !loopback_host(&parts.headers) {
                    return Err(MlflowError::from(ApiError::new(
                        ErrorCode::PermissionDenied,
                        "without --auth scram the MLflow API answers only requests addressed \
                         to localhost, 127.0.0.1 or [::1]",
                    ))
                    .into_response());
                }
                Ok(Caller {
                    user: None,
                    role: Role::Superuser,
                })
            }
            ApiAccess::Login => {
                let refuse = |why: &str| {
                    let mut response = MlflowError {
                        status: axum::http::StatusCode::UNAUTHORIZED,
                        code: "UNAUTHENTICATED",
                        message: why.to_string(),
                    }
                    .into_response();
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"runbase\""),
                    );
                    response
                };
                let Some((user, password)) = basic_credentials(&parts.headers) else {
                    return Err(refuse(
                        "send a user name and password (HTTP basic auth: set \
                         MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)",
                    ));
                };
                match state.sessions.check_basic(&state.db, user, password).await {
                    Ok(Some(caller)) => Ok(caller),
                    Ok(None) => {
                        state
                            .db
                            .stats()
                            .connection_refused("http", "authentication_failed");
                        Err(refuse("wrong user name or password"))
                    }
                    Err(e) => Err(MlflowError::from(e).into_response()),
                }
            }
        }
    }
}

impl Sessions {
    /// The caller these basic-auth credentials stand for, `None` if they are wrong.
    /// Remembered for [`BASIC_TTL`] once right; a changed password or a dropped user
    /// applies at once, and a changed role too.
    async fn check_basic(
        &self,
        db: &runbase_engine::Database,
        user: String,
        password: String,
    ) -> Result<Option<Caller>, ApiError> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        let remembered = {
            let map = self.basic.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&key)
                .filter(|(_, _, until)| *until > Instant::now())
                .cloned()
        };
        if let Some((name, verifier, _)) = remembered {
            let current = db.users().user(&name)?;
            if let Some(u) = current.filter(|u| u.verifier == verifier) {
                return Ok(Some(Caller {
                    user: Some(name),
                    role: u.role,
                }));
            }
            self.basic
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            return Ok(None);
        }
        let _permit = self
            .logins
            .acquire()
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("login queue: {e}")))?;
        let users = db.users().clone();
        let name = user.clone();
        let checked = tokio::task::spawn_blocking(move || users.check_password(&name, &password))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("checking password: {e}")))??;
        let Some(checked) = checked else {
            return Ok(None);
        };
        let mut map = self.basic.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_BASIC {
            map.retain(|_, (_, _, until)| *until > now);
            if map.len() >= MAX_BASIC {
                map.clear();
            }
        }
        map.insert(
            key,
            (user.clone(), checked.verifier.clone(), now + BASIC_TTL),
        );
        Ok(Some(Caller {
            user: Some(user),
            role: checked.role,
        }))
    }
}

/// Shared between the router's handlers.
pub type SharedSessions = Arc<Sessions>;
