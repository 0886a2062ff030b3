//! Raw PostgreSQL frontend messages over a plain socket, for sending what no driver would:
//! malformed messages and out-of-order protocol sequences.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A frontend message: tag, length, body.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A protocol 3.0 startup packet for `user` and database `runbase`.
pub fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", user), ("database", "runbase")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut f = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

/// Reads backend messages until one of type `until` (returned with its body), or the end.
pub fn read_until(s: &mut TcpStream, until: u8) -> Option<Vec<u8>> {
    loop {
        let (tag, body) = read_message(s)?;
        if tag == until {
            return Some(body);
        }
    }
}

/// Reads one backend message.
pub fn read_message(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).ok()?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    s.read_exact(&mut body).ok()?;
    Some((head[0], body))
}

/// The SQLSTATE and message of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|b| *b == 0) {
        if let Some((&kind, text)) = field.split_first() {
            let text = String::from_utf8_lossy(text).to_string();
            match kind {
                b'C' => code = text,
                b'M' => message = text,
                _ => {}
            }
        }
    }
    (code, message)
}

/// A socket to `port` with a 20 s read timeout.
pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// A socket logged in (trust) as `runbase`, after its first ReadyForQuery.
pub fn logged_in(port: u16) -> TcpStream {
    let mut s = connect(port);
    s.write_all(&startup_packet("runbase")).expect("startup");
    read_until(&mut s, b'Z').expect("ReadyForQuery after login");
    s
}
