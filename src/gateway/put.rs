//! Header writes through Pingora, without a copy of the name per write.
//!
//! Pingora keeps each header's spelling in a second map, taken from the name it is given: a
//! `HeaderName` that Pingora does not title-case itself (`X-Frame-Options`, `Location`, ...)
//! is copied into a fresh buffer on every write, a `&'static str` is not. The names Portcullis
//! writes on many answers are passed as static strings spelled exactly as Pingora wrote them
//! before (lower case), so what goes on the wire is unchanged.

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

/// `name` as a static string, for the names written often; `None` for the others (written
/// as before). Each is in lower case, the bytes Pingora writes for a `HeaderName` it does not
/// title-case.
pub(super) fn wire(name: &HeaderName) -> Option<&'static str> {
    use http::header;
    Some(match *name {
        header::X_CONTENT_TYPE_OPTIONS => "x-content-type-options",
        header::X_FRAME_OPTIONS => "x-frame-options",
        header::REFERRER_POLICY => "referrer-policy",
        header::CONTENT_SECURITY_POLICY => "content-security-policy",
        header::STRICT_TRANSPORT_SECURITY => "strict-transport-security",
        header::LOCATION => "location",
        header::WWW_AUTHENTICATE => "www-authenticate",
        header::RETRY_AFTER => "retry-after",
        header::VARY => "vary",
        _ => return None,
    })
}

/// Sets `name` on a request, replacing any value it had.
pub(super) fn request(
    req: &mut RequestHeader,
    name: &HeaderName,
    value: HeaderValue,
) -> Result<()> {
    match wire(name) {
        Some(n) => req.insert_header(n, value),
        None => req.insert_header(name.clone(), value),
    }
}

/// Sets `name` on a response, replacing any value it had.
pub(super) fn response(
    resp: &mut ResponseHeader,
    name: &HeaderName,
    value: HeaderValue,
) -> Result<()> {
    match wire(name) {
        Some(n) => resp.insert_header(n, value),
        None => resp.insert_header(name.clone(), value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The static spelling is the name itself: a header written through [`wire`] is the same
    /// header, and goes on the wire in the bytes Pingora wrote for the `HeaderName`.
    #[test]
    fn static_names_are_the_names_in_pingoras_spelling() {
        use http::header;
        let names = [
            header::X_CONTENT_TYPE_OPTIONS,
            header::X_FRAME_OPTIONS,
            header::REFERRER_POLICY,
            header::CONTENT_SECURITY_POLICY,
            header::STRICT_TRANSPORT_SECURITY,
            header::LOCATION,
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
            header::VARY,
        ];
        for name in names {
            let wire = wire(&name).expect("a static spelling");
            assert_eq!(wire, name.as_str());
            // Written both ways, the response serialises to the same bytes.
            let mut by_name = ResponseHeader::build(200, None).unwrap();
            by_name.insert_header(name.clone(), "v").unwrap();
            let mut by_wire = ResponseHeader::build(200, None).unwrap();
            response(&mut by_wire, &name, HeaderValue::from_static("v")).unwrap();
            let (mut a, mut b) = (bytes::BytesMut::new(), bytes::BytesMut::new());
            by_name.header_to_h1_wire(&mut a);
            by_wire.header_to_h1_wire(&mut b);
            assert_eq!(a, b, "{name}");
        }
        assert_eq!(wire(&header::CONTENT_TYPE), None);
        assert_eq!(wire(&HeaderName::from_static("x-auth-request-user")), None);
    }
}
