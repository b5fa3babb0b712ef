//! A raw HTTP/1.1 client over a plain TCP stream: it sends exactly the bytes it is given, which
//! reqwest and `url` would normalise (`/a/../b`, `%2e%2e`, bad `Host` values).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header_value(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        super::header_values(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Sends `request` verbatim to 127.0.0.1:port and reads one response. Fails if nothing
/// complete arrives within 5 s (a hang is a failure, not a wait).
pub async fn raw(port: u16, request: &[u8]) -> std::io::Result<RawResponse> {
    let head_request = request.starts_with(b"HEAD ");
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        // A server may answer and close before reading everything (oversized requests).
        let write_err = s.write_all(request).await.err();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(r) = parse_response(&buf, head_request, false) {
                return Ok(r);
            }
            match s.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if buf.is_empty() => return Err(write_err.unwrap_or(e)),
                Err(_) => break,
            }
        }
        parse_response(&buf, head_request, true).ok_or_else(|| {
            write_err.unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed without a complete response ({} bytes: {:?})",
                        buf.len(),
                        String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    ),
                )
            })
        })
    };
    tokio::time::timeout(RAW_TIMEOUT, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 5 s"))?
}

/// Sends each request on one keep-alive connection, reading one response after each; fails
/// if the connection closes early or an answer takes more than 5 s.
pub async fn raw_keepalive(port: u16, requests: &[&[u8]]) -> std::io::Result<Vec<RawResponse>> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut out = Vec::new();
        // Kept across requests: bytes after one response belong to the next (an extra
        // response the server should not have sent shows up as the next answer).
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        for req in requests {
            s.write_all(req).await?;
            let head = req.starts_with(b"HEAD ");
            loop {
                if let Some((r, used)) = parse_one(&buf, head, false) {
                    buf.drain(..used);
                    out.push(r);
                    break;
                }
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("connection closed after {} response(s)", out.len()),
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(RAW_TIMEOUT, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 5 s"))?
}

/// How long the harness waits for a server before it calls it a hang.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// What a server did with a request it is allowed to refuse by closing the connection.
#[derive(Debug)]
pub enum Answer {
    /// A complete response.
    Response(RawResponse),
    /// The server closed (EOF) or reset the connection without a complete response; the
    /// text says how.
    Closed(String),
}

impl Answer {
    /// The response; panics (naming `what`) if the connection was closed instead.
    pub fn response(self, what: &str) -> RawResponse {
        match self {
            Answer::Response(r) => r,
            Answer::Closed(how) => panic!("{what}: no response, the connection was {how}"),
        }
    }
}

/// Whether `e` says the server closed or reset the connection (as opposed to the harness
/// giving up on it, or nothing listening).
fn closed_by_server(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Like [`raw`], for tests where a server may refuse by closing the connection: a connection
/// closed or reset by the server is [`Answer::Closed`]. The harness's own timeout (neither an
/// answer nor a close within [`RAW_TIMEOUT`]) and any other error fail the test: a hang is
/// never an acceptable refusal.
pub async fn raw_or_closed(port: u16, request: &[u8]) -> Answer {
    match raw(port, request).await {
        Ok(r) => Answer::Response(r),
        Err(e) if closed_by_server(&e) => Answer::Closed(format!("closed ({e})")),
        Err(e) => panic!(
            "{:?}: neither an answer nor a closed connection: {e}",
            String::from_utf8_lossy(&request[..request.len().min(120)])
        ),
    }
}

/// One connection to 127.0.0.1:port, to see exactly what happens on it: pipelined or
/// smuggled requests, what follows a refusal. Responses are read one at a time, each with the
/// [`RAW_TIMEOUT`] limit; running into it panics.
pub struct RawConn {
    stream: tokio::net::TcpStream,
    /// Bytes read but not yet taken by a response.
    buf: Vec<u8>,
    /// Set once the server closed or reset the connection, saying how.
    closed: Option<String>,
}

impl RawConn {
    pub async fn open(port: u16) -> RawConn {
        let stream = tokio::time::timeout(
            RAW_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .unwrap_or_else(|_| panic!("connecting to 127.0.0.1:{port}: no answer in 5 s"))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
        RawConn {
            stream,
            buf: Vec::new(),
            closed: None,
        }
    }

    /// Whether the server has been seen closing or resetting the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Writes `bytes`. A server that already closed the connection may make this fail: that
    /// is noted, and the next [`RawConn::next`] reports the connection closed.
    pub async fn send(&mut self, bytes: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        match tokio::time::timeout(RAW_TIMEOUT, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if closed_by_server(&e) => {
                self.closed = Some(format!("closed while sending ({e})"));
            }
            Ok(Err(e)) => panic!("sending on the connection: {e}"),
            Err(_) => panic!("sending on the connection: not accepted in 5 s"),
        }
    }

    /// The next response on the connection (`head`: it answers a HEAD request), or
    /// [`Answer::Closed`] once the server closed or reset the connection before a complete
    /// one. Panics if neither happens within [`RAW_TIMEOUT`].
    pub async fn next(&mut self, head: bool) -> Answer {
        let deadline = tokio::time::Instant::now() + RAW_TIMEOUT;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some((r, used)) = parse_one(&self.buf, head, self.closed.is_some()) {
                self.buf.drain(..used);
                return Answer::Response(r);
            }
            if let Some(how) = &self.closed {
                let pending = String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)]);
                return Answer::Closed(if self.buf.is_empty() {
                    how.clone()
                } else {
                    format!("{how} after an incomplete response: {pending:?}")
                });
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) => self.closed = Some("closed (EOF)".into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) if closed_by_server(&e) => self.closed = Some(format!("reset ({e})")),
                Ok(Err(e)) => panic!("reading from the connection: {e}"),
                Err(_) => panic!(
                    "neither a response nor a closed connection within {RAW_TIMEOUT:?} (read so far: {:?})",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                ),
            }
        }
    }
}

/// `GET target` with `Host: host`, the given extra header lines and `Connection: close`;
/// panics on an I/O failure.
pub async fn raw_get(port: u16, host: &str, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    raw_request(port, "GET", host, target, headers, b"").await
}

/// Any method, with an optional body (`Content-Length` added when non-empty).
pub async fn raw_request(
    port: u16,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(port, &bytes)
        .await
        .unwrap_or_else(|e| panic!("{method} {target} (Host: {host}): {e}"))
}

/// Parses one complete response from `buf`; `eof` means no more bytes will come.
fn parse_response(buf: &[u8], head_request: bool, eof: bool) -> Option<RawResponse> {
    parse_one(buf, head_request, eof).map(|(r, _)| r)
}

/// Like [`parse_response`], also returning how many bytes of `buf` the response took (so that
/// what follows it on the connection can be read as the next one).
fn parse_one(buf: &[u8], head_request: bool, eof: bool) -> Option<(RawResponse, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let body_start = end + 4;
    let rest = &buf[body_start..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let resp = |body: Vec<u8>, used: usize| {
        (
            RawResponse {
                status,
                headers: headers.clone(),
                body,
            },
            body_start + used,
        )
    };
    if (100..200).contains(&status) && status != 101 {
        // An interim response: parse what follows it.
        return parse_one(rest, head_request, eof).map(|(r, used)| (r, body_start + used));
    }
    if head_request || status == 204 || status == 304 || status == 101 {
        return Some(resp(Vec::new(), 0));
    }
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return dechunk(rest).map(|(body, used)| resp(body, used));
    }
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (rest.len() >= len).then(|| resp(rest[..len].to_vec(), len));
    }
    eof.then(|| resp(rest.to_vec(), rest.len()))
}

/// The body of a chunked message at the start of `data`, and how many bytes it took (trailers
/// included).
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailer fields, then the empty line that ends the message.
            loop {
                let line_end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = line_end == at;
                at = line_end + 2;
                if empty {
                    return Some((out, at));
                }
            }
        }
        if data.len() < at + size + 2 {
            return None;
        }
        out.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
}
