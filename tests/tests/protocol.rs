//! Malformed frontend messages over a raw socket: each gets a FATAL 08P01 ErrorResponse and
//! the connection closes; the server keeps serving everyone else. (pgwire's decoder panicked
//! on several of these frames before the server guarded it: no ErrorResponse, a dead task.)

use std::io::{Read, Write};

use runbase_tests::server::{TestServer, runbase_sql};
use runbase_tests::wire::{connect, error_fields, frame, logged_in, read_until, startup_packet};

/// Sends `bad` after a trust login; returns the SQLSTATE and message answered, and whether
/// the server then closed the connection.
fn answer_to(port: u16, bad: &[u8]) -> (String, String, bool) {
    let mut s = logged_in(port);
    s.write_all(bad).expect("send");
    // Whatever the server makes of it, a Sync after it asks for an answer.
    let _ = s.write_all(&frame(b'S', b""));
    let body = read_until(&mut s, b'E').unwrap_or_default();
    let (code, message) = error_fields(&body);
    // Closed: the end of the stream, or a reset (the server closed with our Sync unread).
    let mut rest = Vec::new();
    let closed = match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (code, message, closed)
}

#[test]
fn malformed_messages_get_08p01_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Bind with no body", frame(b'B', b"")),
        (
            "Bind whose formats are cut short",
            frame(b'B', b"\x00\x00\x00\x03\x00\x00"),
        ),
        (
            "Bind declaring 5 parameters, sending none",
            frame(b'B', b"\x00\x00\x00\x00\x00\x05"),
        ),
        (
            "Bind with a 1000-byte parameter of 2 bytes",
            frame(b'B', b"\x00\x00\x00\x00\x00\x01\x00\x00\x03\xe8\xab\xcd"),
        ),
        (
            "Bind without result formats",
            frame(b'B', b"\x00\x00\x00\x00\x00\x00"),
        ),
        (
            "Bind with a parameter of length -2",
            frame(b'B', b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00"),
        ),
        ("Parse with no body", frame(b'P', b"")),
        (
            "Parse declaring a type it does not send",
            frame(b'P', b"\x00\x00\x00\x01"),
        ),
        ("Close with no body", frame(b'C', b"")),
        ("Describe with no body", frame(b'D', b"")),
        ("Execute without its row limit", frame(b'E', b"\x00")),
        ("Sync hiding a Flush", frame(b'S', b"H\x00\x00\x00\x04")),
        ("CopyData of length 0", vec![b'd', 0, 0, 0, 0]),
        ("a password message of length 0", vec![b'p', 0, 0, 0, 0]),
        (
            "a Query of negative length",
            vec![b'Q', 0xff, 0xff, 0xff, 0xf0],
        ),
    ];
    for (what, bad) in &cases {
        let (code, message, closed) = answer_to(server.port, bad);
        assert_eq!(code, "08P01", "{what}: {message}");
        assert!(closed, "{what}: the connection stays open");
    }
    // Everyone else is served: a whole extended-query cycle over the same raw socket works.
    let mut s = logged_in(server.port);
    let mut msgs = frame(b'P', b"\x00SELECT $1::int + 1\x00\x00\x00");
    msgs.extend(frame(
        b'B',
        b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x0241\x00\x00",
    ));
    msgs.extend(frame(b'E', b"\x00\x00\x00\x00\x00"));
    msgs.extend(frame(b'S', b""));
    s.write_all(&msgs).expect("send");
    let row = read_until(&mut s, b'D').expect("a data row");
    assert!(row.ends_with(b"42"), "{row:?}");
    read_until(&mut s, b'Z').expect("ReadyForQuery");
}

#[tokio::test]
async fn a_malformed_sasl_start_gets_08p01() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    runbase_sql(
        &data,
        "CREATE USER admin WITH SUPERUSER PASSWORD 'Admin-Secret-1'",
    );
    let server = TestServer::start_with(&data, &["--auth", "scram"]);
    for body in [
        &b"SCRAM-SHA-256\x00\x00\x00\x03\xe8ab"[..],
        &b"SCRAM-SHA-256\x00\xff\xff\xff\xfe"[..],
        &b"SCRAM-SHA-256\x00\x00\x00"[..],
    ] {
        let mut s = connect(server.port);
        s.write_all(&startup_packet("admin")).expect("startup");
        // AuthenticationSASL, then the malformed SASLInitialResponse.
        read_until(&mut s, b'R').expect("authentication request");
        s.write_all(&frame(b'p', body)).expect("send");
        let (code, message) = error_fields(&read_until(&mut s, b'E').unwrap_or_default());
        assert_eq!(code, "08P01", "{body:?}: {message}");
    }
    // A real login still works.
    server
        .connect_as("admin", "Admin-Secret-1")
        .await
        .expect("a real login still works");
}
