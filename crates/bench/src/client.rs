//! A minimal HTTP/1.1 keep-alive client on a tokio `TcpStream`: write one request, read
//! the status line, the headers and a `Content-Length` body. No pipelining, no chunked
//! bodies (the Kartu API always sends a length), no TLS: only what the load generator
//! needs, so that the client costs little next to the server it measures.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    consumed: usize,
    /// The server said `Connection: close`: reconnect before the next request.
    pub closed: bool,
}

/// A response: status and body (borrowed from the connection's buffer until the next request).
#[derive(Debug)]
pub struct Response<'a> {
    /// HTTP status.
    pub status: u16,
    /// The body bytes.
    pub body: &'a [u8],
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    /// Connects (with `TCP_NODELAY`: requests are small and one at a time).
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: vec![0; 16 * 1024], filled: 0, consumed: 0, closed: false })
    }

    /// Sends a whole request (head and body already encoded) and reads its response.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response<'_>> {
        if self.closed {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "the server closed the connection"));
        }
        // The previous response's bytes are done with.
        self.buf.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.consumed = 0;
        self.stream.write_all(request).await?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf[..self.filled]).map_err(|e| bad(&format!("bad response: {e}")))? {
                httparse::Status::Complete(head) => {
                    let status = response.code.ok_or_else(|| bad("no status"))?;
                    let mut length = None;
                    let mut close = false;
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let text = std::str::from_utf8(h.value).map_err(|_| bad("content-length"))?;
                            length = Some(text.trim().parse::<usize>().map_err(|_| bad("content-length"))?);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err(bad("chunked responses are not supported by the load generator"));
                        }
                    }
                    let length = length.unwrap_or(0);
                    let end = head + length;
                    if self.buf.len() < end {
                        self.buf.resize(end, 0);
                    }
                    while self.filled < end {
                        self.read_more().await?;
                    }
                    self.consumed = end;
                    self.closed = close;
                    return Ok(Response { status, body: &self.buf[head..end] });
                }
                httparse::Status::Partial => {
                    if self.filled == self.buf.len() {
                        if self.buf.len() >= 1 << 20 {
                            return Err(bad("response head too large"));
                        }
                        self.buf.resize(self.buf.len() * 2, 0);
                    }
                    self.read_more().await?;
                }
            }
        }
    }

    async fn read_more(&mut self) -> io::Result<()> {
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        self.filled += n;
        Ok(())
    }
}

/// Encodes a request with a JSON body (or none).
pub fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    idempotency_key: Option<&str>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
    let _ = write!(out, "{method} {path} HTTP/1.1\r\nHost: kartu\r\n");
    if let Some(t) = token {
        let _ = write!(out, "Authorization: Bearer {t}\r\n");
    }
    if let Some(k) = idempotency_key {
        let _ = write!(out, "Idempotency-Key: {k}\r\n");
    }
    match body {
        Some(b) => {
            let _ = write!(out, "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", b.len());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
    out
}

/// The `code` of a problem+json body, found without a JSON parser (the hot path counts
/// results by code).
pub fn problem_code(body: &[u8]) -> &str {
    let key = b"\"code\":\"";
    body.windows(key.len())
        .position(|w| w == key)
        .and_then(|at| {
            let rest = &body[at + key.len()..];
            let end = rest.iter().position(|b| *b == b'"')?;
            std::str::from_utf8(&rest[..end]).ok()
        })
        .unwrap_or("no_code")
}
