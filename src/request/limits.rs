//! Size and framing limits checked before anything else reads a request.

use crate::refusal::Refusal;

/// Largest total of request header names and values accepted (431 beyond).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest request target accepted (414 beyond).
pub const MAX_TARGET_BYTES: usize = 16 * 1024;

/// What the limits need to know about a request's header fields, gathered in the one pass
/// the front door makes over them ([`Shape::add`] each field, then [`Shape::check`]).
#[derive(Debug, Default)]
pub struct Shape {
    size: usize,
    hosts: usize,
    content_lengths: usize,
    /// Whether the (only) `Content-Length` is one plain number without a leading zero.
    content_length_plain: bool,
    transfer_encoding: bool,
}

impl Shape {
    /// Counts one header field.
    pub fn add(&mut self, name: &http::HeaderName, value: &http::HeaderValue) {
        self.size += name.as_str().len() + value.len() + 4;
        if *name == http::header::HOST {
            self.hosts += 1;
        } else if *name == http::header::CONTENT_LENGTH {
            self.content_lengths += 1;
            let v = value.as_bytes();
            self.content_length_plain = !v.is_empty()
                && v.len() <= 19
                && v.iter().all(u8::is_ascii_digit)
                && (v.len() == 1 || v[0] != b'0');
        } else if *name == http::header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
        }
    }

    /// Refuses requests that are too large or framed ambiguously, before anything else reads
    /// them. `head_names_content_length` reads the raw head; it is asked only when the request
    /// has a `Transfer-Encoding` (see [`head_names_content_length`]).
    pub fn check(
        &self,
        version: http::Version,
        target_len: usize,
        head_names_content_length: impl FnOnce() -> bool,
    ) -> Result<(), Refusal> {
        if target_len > MAX_TARGET_BYTES {
            return Err(Refusal::TargetTooLong);
        }
        if self.size > MAX_HEADER_BYTES {
            return Err(Refusal::HeadersTooLarge);
        }
        if self.transfer_encoding && (self.content_lengths > 0 || head_names_content_length()) {
            // Request smuggling: two framings that servers behind us may read differently.
            return Err(Refusal::AmbiguousFraming);
        }
        // `5, 5` or `05` is accepted by some servers and refused by others: forward only one
        // plain number.
        if self.content_lengths > 1 || (self.content_lengths == 1 && !self.content_length_plain) {
            return Err(Refusal::BadContentLength);
        }
        if self.hosts > 1 || (self.hosts == 0 && version == http::Version::HTTP_11) {
            return Err(Refusal::HostCount);
        }
        Ok(())
    }
}

/// Whether the raw request head names a `Content-Length` field. Pingora drops `Content-Length`
/// when `Transfer-Encoding` is also present (RFC 9112 §6.3), so the conflict can only be seen
/// in the bytes as received.
pub fn head_names_content_length(head: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Shape::check`] over every field of `headers` at once.
    fn check_shape(
        version: http::Version,
        headers: &http::HeaderMap,
        target_len: usize,
        head_names_content_length: impl FnOnce() -> bool,
    ) -> Result<(), Refusal> {
        let mut shape = Shape::default();
        for (name, value) in headers {
            shape.add(name, value);
        }
        shape.check(version, target_len, head_names_content_length)
    }

    #[test]
    fn request_shape_limits() {
        use http::{HeaderMap, HeaderValue, Version};
        let no = || false;
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("x"));
        assert_eq!(check_shape(Version::HTTP_11, &h, 10, no), Ok(()));
        assert_eq!(
            check_shape(Version::HTTP_11, &h, MAX_TARGET_BYTES + 1, no),
            Err(Refusal::TargetTooLong)
        );
        let mut big = h.clone();
        big.insert(
            "x-big",
            HeaderValue::from_str(&"a".repeat(MAX_HEADER_BYTES)).unwrap(),
        );
        assert_eq!(
            check_shape(Version::HTTP_11, &big, 1, no),
            Err(Refusal::HeadersTooLarge)
        );
        let mut both = h.clone();
        both.insert("content-length", HeaderValue::from_static("5"));
        both.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        assert_eq!(
            check_shape(Version::HTTP_11, &both, 1, no),
            Err(Refusal::AmbiguousFraming)
        );
        // Pingora removed the Content-Length: the raw head still names it.
        let mut chunked = h.clone();
        chunked.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        assert_eq!(check_shape(Version::HTTP_11, &chunked, 1, no), Ok(()));
        assert_eq!(
            check_shape(Version::HTTP_11, &chunked, 1, || true),
            Err(Refusal::AmbiguousFraming)
        );
        assert_eq!(
            check_shape(Version::HTTP_11, &HeaderMap::new(), 1, no),
            Err(Refusal::HostCount)
        );
        assert_eq!(
            check_shape(Version::HTTP_10, &HeaderMap::new(), 1, no),
            Ok(())
        );
        for bad in ["5, 5", "05", "+5", "", "5 "] {
            let mut cl = h.clone();
            cl.insert("content-length", HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                check_shape(Version::HTTP_11, &cl, 1, no),
                Err(Refusal::BadContentLength),
                "{bad:?}"
            );
        }
        let mut ok = h.clone();
        ok.insert("content-length", HeaderValue::from_static("0"));
        assert_eq!(check_shape(Version::HTTP_11, &ok, 1, no), Ok(()));
        let mut two = h.clone();
        two.append("host", HeaderValue::from_static("y"));
        assert_eq!(
            check_shape(Version::HTTP_11, &two, 1, no),
            Err(Refusal::HostCount)
        );
    }

    #[test]
    fn content_length_in_the_raw_head() {
        assert!(head_names_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!head_names_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!head_names_content_length(
            b"POST /content-length: HTTP/1.1\r\n\r\n"
        ));
    }
}
