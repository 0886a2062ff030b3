//! The HTTP front end's options.

use std::net::SocketAddr;

use super::pg::AuthMethod;

/// Where the HTTP front end listens, if at all.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Address to listen on for HTTP clients (`GET /health`). Like `--auth trust` for
    /// PostgreSQL clients, a non-loopback address needs `--auth scram`.
    #[arg(long, env = "RUNBASE_HTTP_LISTEN", default_value = "127.0.0.1:5480")]
    pub http_listen: SocketAddr,

    /// Do not start the HTTP front end (only PostgreSQL clients are served).
    #[arg(long, env = "RUNBASE_NO_HTTP")]
    pub no_http: bool,
}

impl HttpArgs {
    /// The address to bind, `None` with `--no-http`; refuses a non-loopback address
    /// unless clients must authenticate (`auth` is SCRAM), the rule `--auth trust` follows
    /// for PostgreSQL clients: the HTTP front end will serve what they can, so it is held
    /// to the same bar before it is reachable from other machines.
    pub fn address(&self, auth: AuthMethod) -> Result<Option<SocketAddr>, String> {
        if self.no_http {
            return Ok(None);
        }
        if auth == AuthMethod::Trust && !self.http_listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen for HTTP on {} with --auth trust: only loopback addresses are allowed without authentication; use --auth scram, a loopback --http-listen, or --no-http",
                self.http_listen
            ));
        }
        Ok(Some(self.http_listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addr: &str, no_http: bool) -> HttpArgs {
        HttpArgs {
            http_listen: addr.parse().expect("address"),
            no_http,
        }
    }

    #[test]
    fn trust_keeps_http_on_loopback() {
        let local = args("127.0.0.1:5480", false);
        assert_eq!(
            local.address(AuthMethod::Trust),
            Ok(Some("127.0.0.1:5480".parse().expect("address")))
        );
        let open = args("0.0.0.0:5480", false);
        let err = open.address(AuthMethod::Trust).expect_err("refused");
        assert!(err.contains("--auth scram"), "{err}");
        assert!(open.address(AuthMethod::Scram).is_ok());
        assert_eq!(
            args("0.0.0.0:5480", true).address(AuthMethod::Trust),
            Ok(None)
        );
    }
}
