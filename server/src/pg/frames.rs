//! A guard between the socket and pgwire's decoder: frontend messages reach pgwire only whole
//! and well formed.
//!
//! pgwire 0.41 (and 0.42) decodes a message with unchecked reads over the whole read buffer:
//! a Bind that declares more parameters than it carries, a Parse or Execute cut short, a
//! length under 4, all panic inside `Framed::next` (a `bytes` read past the end), before
//! authentication; and a message shorter than its fields silently swallows the next one.
//! [`Guarded`] wraps the socket: it reads ahead, cuts the stream at each message's declared
//! length, checks the message's layout ([`check_body`]) and only then hands the bytes on. A
//! malformed message is an `InvalidData` error, which the connection loop answers with
//! 08P01 (protocol_violation) before closing, as PostgreSQL does.
//!
//! CopyData and password messages carry free-form bytes and are passed on as they arrive
//! (COPY does not wait for a whole message to be buffered twice).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest message pgwire accepts for Parse, Bind, Query and CopyData.
const LARGE_MESSAGE: usize = 1024 * 1024 * 1024 - 2;
/// The largest of any other message (pgwire's figure).
const SMALL_MESSAGE: usize = 10_000;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// SSLRequest and GSSENCRequest codes: the client may send its startup packet after them.
const NEGOTIATION_CODES: [i32; 2] = [80_877_103, 80_877_104];
/// CancelRequest's code (its body is a process id and a secret, read by length).
const CANCEL_CODE: i32 = 80_877_102;

/// Why a frontend message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

/// Whether `e` is a [`Guarded`] refusal, and its message.
pub fn malformed(e: &io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Malformed>())
        .map(|m| m.0.clone())
}

fn bad(message: impl Into<String>) -> Malformed {
    Malformed(message.into())
}

/// A socket whose reads yield only whole, well-formed frontend messages.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    /// Bytes read from the socket, not yet checked.
    pending: BytesMut,
    /// Checked bytes, not yet read by pgwire.
    ready: BytesMut,
    /// Bytes of the current message that pass through unchecked (CopyData, passwords).
    passthrough: usize,
    /// The next message is untagged: a startup packet, a cancel request or a negotiation.
    untagged: bool,
    /// A refusal already reported; every later read repeats it.
    failed: Option<Malformed>,
}

impl<S> Guarded<S> {
    /// Wraps `inner`; `already_read` are bytes read from it before (pgwire's read buffer),
    /// which are checked like the rest. The first message is a startup packet.
    pub fn new(inner: S, already_read: BytesMut) -> Self {
        Self {
            inner,
            pending: already_read,
            ready: BytesMut::new(),
            passthrough: 0,
            untagged: true,
            failed: None,
        }
    }

    /// Moves whatever checked bytes `pending` holds into `ready`; an error for a malformed
    /// message.
    fn advance(&mut self) -> Result<(), Malformed> {
        loop {
            if self.passthrough > 0 {
                let n = self.passthrough.min(self.pending.len());
                if n == 0 {
                    return Ok(());
                }
                self.ready.extend_from_slice(&self.pending.split_to(n));
                self.passthrough -= n;
                continue;
            }
            let header = if self.untagged { 4 } else { 5 };
            if self.pending.len() < header {
                return Ok(());
            }
            let at = header - 4;
            let declared = i32::from_be_bytes([
                self.pending[at],
                self.pending[at + 1],
                self.pending[at + 2],
                self.pending[at + 3],
            ]);
            if self.untagged {
                if !(8..=SMALL_MESSAGE as i32).contains(&declared) {
                    return Err(bad(format!("invalid length of startup packet: {declared}")));
                }
                let len = declared as usize;
                if self.pending.len() < len {
                    return Ok(());
                }
                let code = i32::from_be_bytes([
                    self.pending[4],
                    self.pending[5],
                    self.pending[6],
                    self.pending[7],
                ]);
                let negotiation = len == 8 && NEGOTIATION_CODES.contains(&code);
                if !negotiation && code != CANCEL_CODE {
                    check_startup(&self.pending[8..len])?;
                }
                self.untagged = negotiation;
                self.ready.extend_from_slice(&self.pending.split_to(len));
                continue;
            }
            let tag = self.pending[0];
            let limit = match tag {
                b'P' | b'B' | b'Q' | b'd' => LARGE_MESSAGE,
                _ => SMALL_MESSAGE,
            };
            if declared < 4 || declared as usize > limit {
                return Err(bad(format!(
                    "invalid message length {declared} for message type \"{}\"",
                    tag.escape_ascii()
                )));
            }
            let total = declared as usize + 1;
            if matches!(tag, b'd' | b'p') {
                // Free-form bytes: pgwire reads them by the declared length alone.
                self.passthrough = total;
                continue;
            }
            if self.pending.len() < total {
                return Ok(());
            }
            check_body(tag, &self.pending[5..total])?;
            self.ready.extend_from_slice(&self.pending.split_to(total));
        }
    }
}

/// Reads a NUL-terminated string off `b`.
fn cstr(b: &mut &[u8], what: &str) -> Result<(), Malformed> {
    let end = b
        .iter()
        .position(|c| *c == 0)
        .ok_or_else(|| bad(format!("invalid message format: {what} is not terminated")))?;
    b.advance(end + 1);
    Ok(())
}

/// A NUL-terminated string that must be UTF-8: pgwire would decode it lossily, turning a
/// query's invalid bytes into U+FFFD and storing them.
fn utf8_cstr(b: &mut &[u8], what: &str) -> Result<(), Malformed> {
    let text = *b;
    cstr(b, what)?;
    let len = text.len() - b.len() - 1;
    std::str::from_utf8(&text[..len]).map(|_| ()).map_err(|e| {
        bad(format!(
            "invalid byte sequence for encoding \"UTF8\" in {what} at byte {}",
            e.valid_up_to()
        ))
    })
}

fn take(b: &mut &[u8], n: usize, what: &str) -> Result<(), Malformed> {
    if b.len() < n {
        return Err(bad(format!("invalid message format: {what} is cut short")));
    }
    b.advance(n);
    Ok(())
}

fn u16_of(b: &mut &[u8], what: &str) -> Result<usize, Malformed> {
    if b.len() < 2 {
        return Err(bad(format!("invalid message format: {what} is missing")));
    }
    Ok(usize::from(b.get_u16()))
}

fn i32_of(b: &mut &[u8], what: &str) -> Result<i32, Malformed> {
    if b.len() < 4 {
        return Err(bad(format!("invalid message format: {what} is missing")));
    }
    Ok(b.get_i32())
}

fn end(b: &[u8], tag: u8) -> Result<(), Malformed> {
    if b.is_empty() {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid message format: {} bytes left over in message type \"{}\"",
            b.len(),
            tag.escape_ascii()
        )))
    }
}

/// Checks that `body` (the message after its tag and length) holds exactly the fields pgwire
/// reads for a message of type `tag`. Types pgwire does not read field by field pass.
pub fn check_body(tag: u8, body: &[u8]) -> Result<(), Malformed> {
    let b = &mut &body[..];
    match tag {
        b'B' => {
            cstr(b, "the portal name")?;
            cstr(b, "the statement name")?;
            let formats = u16_of(b, "the parameter format count")?;
            take(b, formats * 2, "the parameter formats")?;
            let params = u16_of(b, "the parameter count")?;
            for i in 0..params {
                let len = i32_of(b, "a parameter length")?;
                match len {
                    -1 => {}
                    n if n < -1 => {
                        return Err(bad(format!(
                            "invalid message format: parameter {} has length {n}",
                            i + 1
                        )));
                    }
                    n => take(b, n as usize, "a parameter value")?,
                }
            }
            let results = u16_of(b, "the result format count")?;
            take(b, results * 2, "the result formats")?;
        }
        b'P' => {
            utf8_cstr(b, "the statement name")?;
            utf8_cstr(b, "the query")?;
            let types = u16_of(b, "the parameter type count")?;
            take(b, types * 4, "the parameter types")?;
        }
        b'D' | b'C' => {
            take(b, 1, "the object kind")?;
            cstr(b, "the name")?;
        }
        b'E' => {
            cstr(b, "the portal name")?;
            take(b, 4, "the row limit")?;
        }
        b'Q' => utf8_cstr(b, "the query")?,
        b'f' => cstr(b, "the text")?,
        b'S' | b'H' | b'X' | b'c' => {}
        // Passed through whole (CopyData, passwords and SASL: checked where read).
        b'd' | b'p' => return Ok(()),
        b'F' => {
            return Err(bad(
                "the FunctionCall message (fast-path function calls) is not supported; call the function in a query",
            ));
        }
        other => {
            return Err(bad(format!(
                "invalid frontend message type {:?}",
                char::from(other)
            )));
        }
    }
    end(b, tag)
}

/// Checks a startup packet's parameters (after its length and protocol version): name and
/// value strings, ended by an empty name at exactly the declared end. pgwire reads them up
/// to the empty name, whatever the length says: bytes left after it would be decoded as
/// messages the guard never checked, and parameters running past it would eat the next
/// message.
pub fn check_startup(params: &[u8]) -> Result<(), Malformed> {
    let b = &mut &params[..];
    loop {
        let at = b.iter().position(|c| *c == 0).ok_or_else(|| {
            bad("invalid startup packet layout: expected terminator as last byte")
        })?;
        if at == 0 {
            b.advance(1);
            break;
        }
        b.advance(at + 1);
        cstr(b, "a startup parameter's value")?;
    }
    if b.is_empty() {
        Ok(())
    } else {
        Err(bad(
            "invalid startup packet layout: expected terminator as last byte",
        ))
    }
}

/// Checks a SASLInitialResponse body (mechanism, then a length-prefixed response) before
/// pgwire reads it unchecked.
pub fn check_sasl_initial(body: &[u8]) -> Result<(), Malformed> {
    let b = &mut &body[..];
    cstr(b, "the SASL mechanism")?;
    match i32_of(b, "the SASL response length")? {
        -1 => {}
        n if n < -1 => {
            return Err(bad(format!(
                "invalid message format: SASL response length {n}"
            )));
        }
        n => take(b, n as usize, "the SASL response")?,
    }
    end(b, b'p')
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Inside a CopyData message with nothing buffered: read straight into the caller's
        // buffer (no copy), as long as the read cannot run past the message.
        if this.ready.is_empty()
            && this.pending.is_empty()
            && this.failed.is_none()
            && this.passthrough >= buf.remaining()
        {
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(())) = polled {
                this.passthrough -= buf.filled().len() - before;
            }
            return polled;
        }
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())));
            }
            if let Err(e) = this.advance() {
                this.failed = Some(e);
                continue;
            }
            if !this.ready.is_empty() {
                continue;
            }
            // Read more.
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // End of stream; a message cut short by it is simply not delivered.
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => this.pending.extend_from_slice(read.filled()),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\x00u\x00\x00";
        let mut f = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    /// A random frontend message body built from the fields pgwire reads — strings,
    /// 16-bit counts, 32-bit lengths (-1, 0, small, huge), raw bytes — so that some bodies
    /// are well formed and many are near misses.
    fn random_body(next: &mut impl FnMut() -> u64) -> Vec<u8> {
        let mut body = Vec::new();
        for _ in 0..next() % 8 {
            match next() % 6 {
                0 => body.extend_from_slice(b"s\0"),
                1 => body.push(0),
                2 => body.extend_from_slice(&((next() % 4) as u16).to_be_bytes()),
                3 => {
                    let v: i32 = match next() % 4 {
                        0 => -1,
                        1 => 0,
                        2 => (next() % 8) as i32,
                        _ => i32::MAX,
                    };
                    body.extend_from_slice(&v.to_be_bytes());
                }
                4 => body.push(b"SP"[(next() % 2) as usize]),
                _ => body.extend((0..next() % 4).map(|_| next() as u8)),
            }
        }
        body
    }

    /// The guard's promise, checked on random messages of every type: whatever it lets
    /// through, pgwire decodes (or refuses) without panicking.
    #[test]
    fn whatever_the_guard_passes_pgwire_decodes_without_panicking() {
        use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let tags = b"BPDCEQfSHXc";
        let (mut passed, mut refused) = (0, 0);
        for _ in 0..1_000_000 {
            let tag = tags[(next() % tags.len() as u64) as usize];
            let body = random_body(&mut next);
            if check_body(tag, &body).is_err() {
                refused += 1;
                continue;
            }
            passed += 1;
            let mut buf = BytesMut::from(&frame(tag, &body)[..]);
            let mut ctx = DecodeContext::new(ProtocolVersion::default());
            ctx.awaiting_frontend_ssl = false;
            ctx.awaiting_frontend_startup = false;
            let decoded = std::panic::catch_unwind(move || {
                let _ = PgWireFrontendMessage::decode(&mut buf, &ctx);
            });
            assert!(
                decoded.is_ok(),
                "pgwire panicked on a {:?} message the guard passed: {body:?}",
                char::from(tag)
            );
        }
        assert!(
            passed > 1_000 && refused > 1_000,
            "{passed} passed, {refused} refused"
        );
    }

    /// Feeds `bytes` through a guard in `chunk`-sized reads; what came out, and the refusal.
    async fn through(bytes: &[u8], chunk: usize) -> (Vec<u8>, Option<String>) {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let input = bytes.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in input.chunks(chunk.max(1)) {
                client.write_all(c).await.expect("write");
            }
            client.shutdown().await.expect("shutdown");
        });
        let mut guarded = Guarded::new(server, BytesMut::new());
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        let refused = loop {
            match guarded.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break Some(malformed(&e).expect("a refusal")),
            }
        };
        writer.await.expect("writer");
        (out, refused)
    }

    #[tokio::test]
    async fn well_formed_messages_pass_unchanged_in_any_chunking() {
        let mut stream = startup();
        stream.extend(frame(b'P', b"s1\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17"));
        stream.extend(frame(
            b'B',
            b"\x00s1\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x04\x00\x00\x00\x07\x00\x01\x00\x01",
        ));
        stream.extend(frame(b'D', b"P\x00"));
        stream.extend(frame(b'E', b"\x00\x00\x00\x00\x00"));
        stream.extend(frame(b'S', b""));
        stream.extend(frame(b'Q', b"COPY t FROM STDIN\x00"));
        stream.extend(frame(b'd', &[0xff; 20_000]));
        stream.extend(frame(b'c', b""));
        stream.extend(frame(b'X', b""));
        for chunk in [1, 3, 5, 4096, 1 << 20] {
            let (out, refused) = through(&stream, chunk).await;
            assert_eq!(refused, None, "chunk {chunk}");
            assert_eq!(out, stream, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn malformed_messages_are_refused_before_pgwire_sees_them() {
        // Frames that panicked pgwire 0.41's decoder, or made it read the next message.
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(b'B', b""), "not terminated"),
            (frame(b'B', b"\x00\x00\x00\x03\x00\x00"), "cut short"),
            (frame(b'B', b"\x00\x00\x00\x00\x00\x05"), "missing"),
            (
                frame(b'B', b"\x00\x00\x00\x00\x00\x01\x00\x00\x03\xe8\xab\xcd"),
                "cut short",
            ),
            (frame(b'B', b"\x00\x00\x00\x00\x00\x00"), "missing"),
            (
                frame(b'B', b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00"),
                "length -2",
            ),
            (frame(b'P', b""), "not terminated"),
            (frame(b'P', b"\x00\x00\x00\x01"), "cut short"),
            (frame(b'C', b""), "cut short"),
            (frame(b'D', b""), "cut short"),
            (frame(b'E', b"\x00"), "cut short"),
            (frame(b'S', b"H\x00\x00\x00\x04"), "left over"),
            (vec![b'd', 0, 0, 0, 0], "invalid message length 0"),
            (vec![b'p', 0, 0, 0, 0], "invalid message length 0"),
            (vec![b'Q', 0xff, 0xff, 0xff, 0xf0], "invalid message length"),
            (vec![b'S', 0, 1, 0, 0], "invalid message length 65536"),
        ];
        for (bad, says) in cases {
            let mut stream = startup();
            stream.extend(&bad);
            stream.extend(frame(b'S', b""));
            let (out, refused) = through(&stream, 3).await;
            let refused = refused.unwrap_or_else(|| panic!("{bad:x?} passed"));
            assert!(refused.contains(says), "{bad:x?}: {refused}");
            // Nothing of the bad message (or after it) got through.
            assert_eq!(out, startup(), "{bad:x?}");
        }
        let (_, refused) = through(&[0, 0, 0, 4], 1).await;
        assert!(refused.expect("refused").contains("startup packet"));
    }

    #[tokio::test]
    async fn a_startup_packet_may_follow_a_declined_negotiation() {
        let mut stream = vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x30]; // GSSENCRequest
        stream.extend(startup());
        stream.extend(frame(b'Q', b"SELECT 1\x00"));
        let (out, refused) = through(&stream, 2).await;
        assert_eq!(refused, None);
        assert_eq!(out, stream);
    }

    /// Found by the pg_frontend fuzz target: pgwire reads a startup packet's parameters up
    /// to the empty name, so a packet declaring more bytes hid a Parse message from the
    /// guard inside itself, which then panicked pgwire's decoder.
    #[tokio::test]
    async fn a_startup_packet_must_end_at_its_terminator() {
        assert!(check_startup(b"user\x00u\x00\x00").is_ok());
        assert!(check_startup(b"\x00").is_ok());
        for bad in [
            &b"user\x00u\x00\x00P\x00\x00\x00\x04"[..],
            b"user\x00u\x00",
            b"user\x00u",
            b"",
        ] {
            assert!(check_startup(bad).is_err(), "{bad:x?}");
        }
        let mut smuggled = b"\x00\x03\x00\x00user\x00u\x00\x00".to_vec();
        smuggled.extend(frame(b'P', b"s\x00"));
        let mut stream = ((smuggled.len() + 4) as i32).to_be_bytes().to_vec();
        stream.extend(smuggled);
        let (out, refused) = through(&stream, 3).await;
        assert!(out.is_empty());
        assert!(refused.expect("refused").contains("startup packet"));
    }

    #[test]
    fn sasl_initial_responses_are_checked() {
        assert!(check_sasl_initial(b"SCRAM-SHA-256\x00\x00\x00\x00\x02ab").is_ok());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\x00\xff\xff\xff\xff").is_ok());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\x00\x00\x00\x03\xe8ab").is_err());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\x00\xff\xff\xff\xfe").is_err());
        assert!(check_sasl_initial(b"SCRAM-SHA-256").is_err());
        assert!(check_sasl_initial(b"SCRAM-SHA-256\x00\x00\x00").is_err());
    }
}
