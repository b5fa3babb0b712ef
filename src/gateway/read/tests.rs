use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn public_authority_from_a_front_proxy() {
    let from = |h: &HeaderMap, own: &str| {
        let get = |name: &str| h.get(name).cloned();
        public_authority(&get("x-forwarded-host"), &get("x-forwarded-port"), own)
    };
    let h = |pairs: &[(&str, &str)]| from(&headers(pairs), "app.test");
    assert_eq!(h(&[]), Ok("app.test".into()));
    assert_eq!(
        h(&[("x-forwarded-host", "app.test:8443")]),
        Ok("app.test:8443".into())
    );
    assert_eq!(
        h(&[("x-forwarded-port", "8443")]),
        Ok("app.test:8443".into())
    );
    assert_eq!(
        h(&[
            ("x-forwarded-host", "app.test:8443, inner:80"),
            ("x-forwarded-port", "1")
        ]),
        Ok("app.test:8443".into())
    );
    assert_eq!(
        from(
            &headers(&[("x-forwarded-host", "[::1]"), ("x-forwarded-port", "8080")]),
            "[::1]"
        ),
        Ok("[::1]:8080".into())
    );
    assert_eq!(
        h(&[("x-forwarded-host", "other.test")]),
        Ok("other.test".into())
    );
    assert_eq!(h(&[("x-forwarded-host", "a b")]), Err(BadRequest::Host));
    assert_eq!(h(&[("x-forwarded-port", "http")]), Err(BadRequest::Host));
}

fn ctx(identity: &str, trusted: bool) -> Ctx {
    let yaml = format!(
        r#"
server: {{ listen: ["127.0.0.1:1"], public_url: "http://app.test" }}
headers: {{ identity: {{ {identity}: "{{user}}" }} }}
session: {{ secrets: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="] }}
providers:
  - {{ id: corp, type: oidc, issuer: "https://idp.test", client_id: c, client_secret: s }}
routes:
  - {{ name: open, path: /, upstream: "static://200", auth: none }}
"#
    );
    let rt = crate::config::load_str(&yaml, std::path::Path::new("t.yaml"), |_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ctx = Ctx::new(std::sync::Arc::new(rt));
    ctx.peer_trusted = trusted;
    ctx
}

fn request(pairs: &[(&str, &[u8])]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    for (n, v) in pairs {
        req.append_header(n.to_string(), HeaderValue::from_bytes(v).unwrap())
            .unwrap();
    }
    req
}

/// The fields taken on the walk are what a lookup per name reads: the first value of
/// each, every `Cookie` line joined, and every `X-Forwarded-For` line counted.
#[test]
fn fields_read_what_lookups_read() {
    let cases: [&[(&str, &[u8])]; 4] = [
        &[
            ("Host", b"app.test"),
            ("Accept", b"text/html"),
            ("Cookie", b"a=1"),
            ("X-Forwarded-For", b"203.0.113.7"),
        ],
        &[
            ("host", b"app.test"),
            ("cookie", b"a=1"),
            ("Authorization", b"Bearer x"),
            ("Origin", b"http://app.test"),
            ("Sec-Fetch-Site", b"same-origin"),
            ("X-Forwarded-Proto", b"https"),
            ("Cookie", b"_portcullis=\xff; b=2"),
            ("Authorization", b"Bearer second"),
            ("X-Forwarded-For", b"198.51.100.1"),
            ("X-Forwarded-For", b"203.0.113.7"),
            ("X-Forwarded-Host", b"app.test:8443"),
            ("X-Forwarded-Port", b"8443"),
            ("X-Forwarded-Host", b"inner.test"),
            ("Accept", b"application/json"),
            ("Accept", b"text/html"),
        ],
        &[("Origin", b"\xfe"), ("Sec-Fetch-Site", b"cross-site")],
        &[],
    ];
    for pairs in cases {
        for trusted in [false, true] {
            let req = request(pairs);
            let mut ctx = ctx("x-user", trusted);
            let (_, doomed, fields) = scan(&req, &mut ctx);
            assert!(doomed.is_empty());
            let h = &req.headers;
            let got = presented(&fields, h);
            assert_eq!(got.cookie, cookie_header(h), "{pairs:?}");
            assert_eq!(
                got.authorization,
                header_str(h, &http::header::AUTHORIZATION)
            );
            assert_eq!(got.origin, header_str(h, &http::header::ORIGIN));
            let site = HeaderName::from_static("sec-fetch-site");
            assert_eq!(got.fetch_site, header_str(h, &site));
            assert_eq!(fields.host.as_ref(), h.get(http::header::HOST));
            assert_eq!(fields.wants_html(), wants_html(&req));
            let proto = &forwarded::X_FORWARDED_PROTO;
            assert_eq!(fields.forwarded_proto.as_ref(), h.get(proto));
            let xff = &forwarded::X_FORWARDED_FOR;
            assert_eq!(fields.forwarded_for.as_ref(), h.get(xff));
            assert_eq!(
                fields.forwarded_for_lines as usize,
                h.get_all(xff).iter().count()
            );
            let host = h.get("x-forwarded-host");
            assert_eq!(fields.forwarded_host.as_ref(), host);
            assert_eq!(fields.forwarded_port.as_ref(), h.get("x-forwarded-port"));
        }
    }
}

/// A configured identity header is stripped before anything reads it, whatever its
/// name: the walk does not take it either (here `Authorization`, which would otherwise
/// present a Bearer token).
#[test]
fn stripped_fields_are_not_read() {
    let req = request(&[("Authorization", b"Bearer forged"), ("Cookie", b"a=1")]);
    let mut ctx = ctx("authorization", false);
    let (_, doomed, fields) = scan(&req, &mut ctx);
    assert_eq!(doomed, [http::header::AUTHORIZATION]);
    let got = presented(&fields, &req.headers);
    assert_eq!(got.authorization, None);
    assert_eq!(got.cookie.as_deref(), Some("a=1"));
}

#[test]
fn routed_host_agrees_with_host() {
    let hv = |s: &'static str| http::HeaderValue::from_static(s);
    assert_eq!(
        routed_host(None, Some(&hv("App.Test:8080"))),
        Ok("App.Test")
    );
    assert_eq!(routed_host(Some("app.test"), None), Ok("app.test"));
    assert_eq!(
        routed_host(Some("APP.test"), Some(&hv("app.TEST"))),
        Ok("app.TEST")
    );
    assert_eq!(
        routed_host(Some("app.test"), Some(&hv("other.test"))),
        Err(BadRequest::HostMismatch)
    );
    assert_eq!(routed_host(None, None), Err(BadRequest::NoHost));
    assert_eq!(routed_host(None, Some(&hv("a b"))), Err(BadRequest::Host));
}
