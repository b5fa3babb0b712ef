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
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 5 s"))?
}

/// Sends each request on one keep-alive connection, reading one response after each; fails
/// if the connection closes early or an answer takes more than 5 s.
pub async fn raw_keepalive(port: u16, requests: &[&[u8]]) -> std::io::Result<Vec<RawResponse>> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut out = Vec::new();
        for req in requests {
            s.write_all(req).await?;
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let head = req.starts_with(b"HEAD ");
            loop {
                if let Some(r) = parse_response(&buf, head, false) {
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
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 5 s"))?
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
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let resp = |body: Vec<u8>| RawResponse {
        status,
        headers: headers.clone(),
        body,
    };
    if (100..200).contains(&status) && status != 101 {
        // An interim response: parse what follows it.
        return parse_response(rest, head_request, eof);
    }
    if head_request || status == 204 || status == 304 || status == 101 {
        return Some(resp(Vec::new()));
    }
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return dechunk(rest).map(resp);
    }
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return (rest.len() >= len).then(|| resp(rest[..len].to_vec()));
    }
    eof.then(|| resp(rest.to_vec()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
