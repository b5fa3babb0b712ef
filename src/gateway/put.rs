//! Header writes through Pingora, without a copy of the name per write.
//!
//! Pingora keeps each header's spelling in a second map, taken from the name it is given: a
//! `HeaderName` that Pingora does not title-case itself (`X-Frame-Options`, `Location`, ...)
//! is copied into a fresh buffer on every write, a `&'static str` is not. The names Portcullis
//! writes on many answers are passed as static strings spelled exactly as Pingora wrote them
//! before (lower case), so what goes on the wire is unchanged.

use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{ErrorType::InvalidHTTPHeader, OrErr, Result};

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

/// Where a response's headers go: Pingora's header of a proxied response, which keeps each
/// header's spelling, or the `http` header map of an answer written here, which keeps none
/// (and so takes a `HeaderName` as it is, where Pingora would parse its name from bytes
/// again on every write).
pub(super) trait ResponseFields {
    fn has(&self, name: &HeaderName) -> bool;
    /// Sets `name`, replacing any value it had.
    fn set(&mut self, name: &HeaderName, value: HeaderValue) -> Result<()>;
    /// Sets `name`, spelled `spelling` where spellings are kept.
    fn set_spelled(
        &mut self,
        name: &HeaderName,
        spelling: &'static str,
        value: HeaderValue,
    ) -> Result<()>;
    /// Adds a value of `name`, after any it has.
    fn add(&mut self, name: &HeaderName, value: HeaderValue) -> Result<()>;
}

impl ResponseFields for ResponseHeader {
    fn has(&self, name: &HeaderName) -> bool {
        self.headers.contains_key(name)
    }

    fn set(&mut self, name: &HeaderName, value: HeaderValue) -> Result<()> {
        response(self, name, value)
    }

    fn set_spelled(
        &mut self,
        _name: &HeaderName,
        spelling: &'static str,
        value: HeaderValue,
    ) -> Result<()> {
        self.insert_header(spelling, value)
    }

    fn add(&mut self, name: &HeaderName, value: HeaderValue) -> Result<()> {
        self.append_header(name.clone(), value).map(|_| ())
    }
}

impl ResponseFields for HeaderMap {
    fn has(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }

    fn set(&mut self, name: &HeaderName, value: HeaderValue) -> Result<()> {
        self.try_insert(name.clone(), value)
            .map(|_| ())
            .or_err(InvalidHTTPHeader, "too many response headers")
    }

    fn set_spelled(
        &mut self,
        name: &HeaderName,
        _spelling: &'static str,
        value: HeaderValue,
    ) -> Result<()> {
        self.set(name, value)
    }

    fn add(&mut self, name: &HeaderName, value: HeaderValue) -> Result<()> {
        self.try_append(name.clone(), value)
            .map(|_| ())
            .or_err(InvalidHTTPHeader, "too many response headers")
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

    /// An answer's header map, given to Pingora as parts, goes on the wire in the same bytes
    /// as Pingora's own header without a case map written with Pingora's inserts (as answers
    /// were written before): title case for the names Pingora knows, the rest as named.
    #[test]
    fn parts_serialise_as_pingoras_no_case_header() {
        use crate::headers::FieldName;
        use http::header;
        let user = FieldName::new(HeaderName::from_bytes(b"X-Auth-Request-User").unwrap());
        let v = HeaderValue::from_static;
        let (mut parts, ()) = http::Response::new(()).into_parts();
        let map = &mut parts.headers;
        map.set(&header::CONTENT_TYPE, v("text/plain")).unwrap();
        map.set(&header::CONTENT_LENGTH, v("0")).unwrap();
        map.add(&header::SET_COOKIE, v("a=1")).unwrap();
        map.add(&header::SET_COOKIE, v("b=2")).unwrap();
        map.set(&user.name, v("alice")).unwrap();
        map.set_spelled(&header::LOCATION, "Location", v("/x"))
            .unwrap();
        map.set(&header::CACHE_CONTROL, v("no-store")).unwrap();
        assert!(map.has(&header::SET_COOKIE) && !map.has(&header::VARY));
        let ours = ResponseHeader::from(parts);

        let mut pingoras = ResponseHeader::build_no_case(200, Some(12)).unwrap();
        pingoras
            .insert_header(header::CONTENT_TYPE, "text/plain")
            .unwrap();
        pingoras.insert_header(header::CONTENT_LENGTH, "0").unwrap();
        pingoras.append_header(header::SET_COOKIE, "a=1").unwrap();
        pingoras.append_header(header::SET_COOKIE, "b=2").unwrap();
        pingoras.insert_header(user.wire, "alice").unwrap();
        pingoras.insert_header("Location", "/x").unwrap();
        pingoras
            .insert_header(header::CACHE_CONTROL, "no-store")
            .unwrap();

        let (mut a, mut b) = (bytes::BytesMut::new(), bytes::BytesMut::new());
        ours.header_to_h1_wire(&mut a);
        pingoras.header_to_h1_wire(&mut b);
        assert_eq!(a, b);
        assert_eq!(
            std::str::from_utf8(&a).unwrap(),
            "Content-Type: text/plain\r\nContent-Length: 0\r\nSet-Cookie: a=1\r\n\
             Set-Cookie: b=2\r\nx-auth-request-user: alice\r\nlocation: /x\r\n\
             Cache-Control: no-store\r\n"
        );
        assert_eq!(
            (ours.status, ours.version),
            (pingoras.status, pingoras.version)
        );
    }
}
