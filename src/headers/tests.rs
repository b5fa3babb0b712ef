use super::*;

#[test]
fn underscores_are_found_wherever_they_are() {
    for len in 0..40 {
        let clean = vec![b'a'; len];
        assert!(!has_underscore(&clean), "{len}");
        // Bytes next to `_` (0x5E, 0x60) and with the high bit set are not it.
        for near in [b'^', b'`', 0xdf, 0x1f] {
            assert!(!has_underscore(&vec![near; len]), "{len} {near}");
        }
        for at in 0..len {
            let mut name = clean.clone();
            name[at] = b'_';
            assert!(has_underscore(&name), "{len} {at}");
        }
    }
}

#[test]
fn strips_configured_builtin_and_underscore_variants() {
    let list = StripList::new([HeaderName::from_static("x-user-id")], true);
    for name in [
        "x-user-id",
        "x-portcullis-assertion",
        "x-portcullis-anything",
        "x-auth-request-email",
        "remote-user",
        "x_auth_request_user",
        "x_user_id",
        "x_portcullis_assertion",
    ] {
        assert!(
            list.matches(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
            "{name}"
        );
    }
    for name in ["accept", "x-request-id", "x_custom_thing", "authorization"] {
        assert!(
            !list.matches(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
            "{name}"
        );
    }
    // By default every underscored name goes.
    let strict = StripList::new([], false);
    for name in [
        "script_name",
        "x_forwarded_for",
        "x_custom_thing",
        "path_info",
    ] {
        assert!(
            strict.matches(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
            "{name}"
        );
    }
    assert!(!strict.matches(&HeaderName::from_static("x-request-id")));
}

#[test]
fn debug_shows_no_value_sent_upstream() {
    let mut secret = HeaderValue::from_static("Basic dXBzdHJlYW06czNjcmV0");
    for sensitive in [false, true] {
        secret.set_sensitive(sensitive);
        let h = RouteHeaders {
            request_add: vec![(HeaderName::from_static("authorization"), secret.clone())],
            response_add: vec![(
                HeaderName::from_static("x-served-by"),
                HeaderValue::from_static("portcullis"),
            )],
            security: SecurityHeaders::default(),
        };
        for shown in [format!("{h:?}"), format!("{h:#?}")] {
            assert!(!shown.contains("dXBzdHJlYW06czNjcmV0"), "{shown}");
            assert!(shown.contains("authorization"), "{shown}");
            assert!(shown.contains("portcullis"), "{shown}");
        }
    }
}

#[test]
fn fates() {
    let list = StripList::new([HeaderName::from_static("my-user")], false);
    let fate = |n: &str| list.fate(&HeaderName::from_bytes(n.as_bytes()).unwrap());
    for n in [
        "my-user",
        "x-auth-request-user",
        "remote-user",
        "x-portcullis-assertion",
        "script_name",
    ] {
        assert_eq!(fate(n), Fate::Strip, "{n}");
    }
    for n in ["x-original-url", "x-http-method-override", "x-rewrite-url"] {
        assert_eq!(fate(n), Fate::NeverForwarded, "{n}");
    }
    for n in [
        "forwarded",
        "front-end-https",
        "fastly-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "client-ip",
        "x-client-ip",
        "x-forwarded-protocol",
    ] {
        assert_eq!(fate(n), Fate::ForwardedIfTrusted, "{n}");
    }
    for n in [
        "accept",
        "host",
        "user-agent",
        "cookie",
        "x-request-id",
        "content-type",
    ] {
        assert_eq!(fate(n), Fate::Keep, "{n}");
    }
}

/// The fate as it was decided before the by-length table: the three lists walked in
/// order after the configured names. The table must agree with it on every name.
fn reference_fate(configured: &[&str], keep_underscored: bool, name: &str) -> Fate {
    let identity = |n: &str| WELL_KNOWN_IDENTITY.contains(&n) || configured.contains(&n);
    let matches = if name.starts_with("x-portcullis-") || name.starts_with("x_portcullis_") {
        true
    } else if name.contains('_') {
        !keep_underscored || identity(&name.replace('_', "-"))
    } else {
        identity(name)
    };
    if matches {
        Fate::Strip
    } else if OVERRIDES_THE_REQUEST_LINE.contains(&name) {
        Fate::NeverForwarded
    } else if DESCRIBES_THE_CLIENT.contains(&name) {
        Fate::ForwardedIfTrusted
    } else {
        Fate::Keep
    }
}

#[test]
fn fate_table_agrees_with_the_lists() {
    let configured_sets: [&[&str]; 4] = [
        &[],
        &["my-user"],
        // Configured names that are also in a built-in list, or a standard header.
        &[
            "x-original-url",
            "x-forwarded-port",
            "authorization",
            "cookie",
        ],
        &[
            "remote-user",
            "a",
            "zz-very-long-configured-identity-header-name-x",
        ],
    ];
    let mut names: Vec<String> = WELL_KNOWN_IDENTITY
        .iter()
        .chain(OVERRIDES_THE_REQUEST_LINE)
        .chain(DESCRIBES_THE_CLIENT)
        .map(|n| n.to_string())
        .collect();
    for extra in [
        "accept",
        "host",
        "cookie",
        "authorization",
        "x-request-id",
        "x-forwarded-for",
        "x-real-ip",
        "x-portcullis-assertion",
        "x-portcullis-",
        "my-user",
        "a",
        "b",
        "t",
        "content-type",
        "forwardedx",
        "x-forwarded-",
        "remote-users",
    ] {
        names.push(extra.to_string());
    }
    for n in names.clone() {
        names.push(n.replace('-', "_"));
        names.push(format!("{n}x"));
        names.push(n[..n.len() - 1].to_string());
    }
    for configured in configured_sets {
        for keep in [false, true] {
            let list = StripList::new(configured.iter().map(|n| HeaderName::from_static(n)), keep);
            for n in names.iter().filter(|n| !n.is_empty()) {
                let name = HeaderName::from_bytes(n.as_bytes()).unwrap();
                assert_eq!(
                    list.fate(&name),
                    reference_fate(configured, keep, n),
                    "{n} with {configured:?}, underscores kept: {keep}"
                );
            }
        }
    }
}

#[test]
fn security_headers_send_hsts_only_over_tls() {
    let set = SecurityHeaders {
        always: vec![(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        )],
        hsts: Some(HeaderValue::from_static("max-age=1")),
    };
    let names = |tls| set.wanted(tls).map(|(n, _)| n.as_str()).collect::<Vec<_>>();
    assert_eq!(names(false), ["x-content-type-options"]);
    assert_eq!(
        names(true),
        ["x-content-type-options", "strict-transport-security"]
    );
}

#[test]
fn field_names_are_spelled_as_pingora_spells_them_and_kept_once() {
    let a = FieldName::new(HeaderName::from_static("x-auth-request-user"));
    let b = FieldName::new(HeaderName::from_bytes(b"X-Auth-Request-User").unwrap());
    assert_eq!(a.wire, "x-auth-request-user");
    assert!(std::ptr::eq(a.wire, b.wire), "one copy per distinct name");
    assert_eq!(FieldName::new(http::header::SET_COOKIE).wire, "Set-Cookie");
    for name in ["x-frame-options", "location", "x-user"] {
        let f = FieldName::new(HeaderName::from_static(name));
        let mut by_name = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        by_name.insert_header(f.name.clone(), "v").unwrap();
        let mut by_wire = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        by_wire.insert_header(f.wire, "v").unwrap();
        let (mut x, mut y) = (bytes::BytesMut::new(), bytes::BytesMut::new());
        by_name.header_to_h1_wire(&mut x);
        by_wire.header_to_h1_wire(&mut y);
        assert_eq!(x, y, "{name}");
    }
}
