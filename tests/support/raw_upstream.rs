//! An upstream that records the exact bytes of every request head it receives, before any
//! HTTP library parses (and normalises) them: the request line as written, the header lines
//! in order. Security tests assert on these bytes, since what matters is what the app behind
//! Portcullis will make of them.
//!
//! It answers every request `200` with `x-raw-upstream: 1`, keeps connections alive, and reads
//! bodies framed by `Content-Length` or chunked encoding.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request head as it arrived, byte for byte, and its body.
#[derive(Debug, Clone)]
pub struct RawSeen {
    /// The request line without its CRLF.
    pub request_line: Vec<u8>,
    /// Header lines without their CRLF, in order.
    pub header_lines: Vec<Vec<u8>>,
    pub body: Vec<u8>,
}

impl RawSeen {
    /// The request target: the bytes between the first and the last space of the line.
    pub fn target(&self) -> &[u8] {
        let line = &self.request_line;
        let first = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        let last = line.iter().rposition(|&b| b == b' ').unwrap_or(line.len());
        if last <= first {
            return &[];
        }
        &line[first + 1..last]
    }

    pub fn target_str(&self) -> String {
        String::from_utf8_lossy(self.target()).into_owned()
    }

    pub fn method(&self) -> String {
        let line = &self.request_line;
        let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        String::from_utf8_lossy(&line[..end]).into_owned()
    }

    /// Every value of header `name` (case-insensitive), as raw bytes.
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.header_lines
            .iter()
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                line[..colon]
                    .eq_ignore_ascii_case(name.as_bytes())
                    .then(|| line[colon + 1..].trim_ascii().to_vec())
            })
            .collect()
    }

    /// The first value of header `name`, lossily as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A raw upstream on 127.0.0.1, serving until dropped.
pub struct RawUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<RawSeen>>>,
}

impl RawUpstream {
    pub fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the raw upstream");
        let addr = listener.local_addr().expect("raw upstream address");
        let seen: Arc<Mutex<Vec<RawSeen>>> = Arc::default();
        let log = Arc::clone(&seen);
        std::thread::Builder::new()
            .name(format!("raw-upstream-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let log = Arc::clone(&log);
                    std::thread::spawn(move || serve(stream, &log));
                }
            })
            .expect("raw upstream thread");
        RawUpstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<RawSeen> {
        self.seen.lock().expect("raw upstream log").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("raw upstream log").len()
    }

    /// The most recent request; panics if none arrived.
    pub fn last(&self) -> RawSeen {
        self.received()
            .pop()
            .expect("the raw upstream received no request")
    }
}

/// Reads requests off one connection until it closes, recording and answering each.
fn serve(stream: TcpStream, log: &Mutex<Vec<RawSeen>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some(lines) = read_head(&mut reader) else {
            return;
        };
        let (request_line, header_lines) = match lines.split_first() {
            Some((first, rest)) => (first.clone(), rest.to_vec()),
            None => return,
        };
        let mut seen = RawSeen {
            request_line,
            header_lines,
            body: Vec::new(),
        };
        let chunked = seen
            .header_all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().ends_with(b"chunked"));
        let body = if chunked {
            read_chunked(&mut reader)
        } else {
            let len = seen
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).ok().map(|()| body)
        };
        let Some(body) = body else {
            return;
        };
        seen.body = body;
        let close = seen
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        log.lock().expect("raw upstream log").push(seen);
        let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-raw-upstream: 1\r\ncontent-length: 2\r\n\r\nok";
        if writer.write_all(answer.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// The lines of one request head (without CRLF), or `None` at the end of the connection.
fn read_head(reader: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Some(lines);
        }
        lines.push(line);
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).ok()?;
        let size = usize::from_str_radix(size_line.trim().split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                reader.read_line(&mut trailer).ok()?;
                if trailer.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..size]);
    }
}
