use super::*;

#[test]
fn params_are_dropped_for_matching() {
    for (given, want) in [
        ("/admin", "/admin"),
        ("/admin;x", "/admin"),
        ("/admin;x/users", "/admin/users"),
        ("/admin;jsessionid=1/users;a=b;c", "/admin/users"),
        ("/;/admin", "/admin"),
        ("/;x", "/"),
        ("/admin;x/", "/admin/"),
        ("/a/;x/b", "/a/b"),
    ] {
        assert_eq!(without_params(given), want, "{given}");
    }
    assert!(matches!(
        without_params("/plain/path"),
        std::borrow::Cow::Borrowed(_)
    ));
}

fn ok(raw: &str) -> String {
    normalize(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e:?}"))
}

#[test]
fn normal_paths_are_kept() {
    for p in [
        "/",
        "/a",
        "/a/b/",
        "/a%20b",
        "/caf%C3%A9",
        "/a;b=c",
        "/a:b@c",
    ] {
        assert_eq!(ok(p), p);
    }
}

#[test]
fn dot_segments_and_slashes_resolve() {
    assert_eq!(ok("/a/../b"), "/b");
    assert_eq!(ok("/a/./b"), "/a/b");
    assert_eq!(ok("//a///b"), "/a/b");
    assert_eq!(ok("/a/b/.."), "/a/");
    assert_eq!(ok("/a/."), "/a/");
    assert_eq!(ok("/public/../admin"), "/admin");
}

#[test]
fn unreserved_escapes_decode() {
    assert_eq!(ok("/%61dmin"), "/admin");
    assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
    assert_eq!(ok("/public/%2E./admin"), "/admin");
    assert_eq!(ok("/a%7eb"), "/a~b");
    assert_eq!(ok("/x%3fy"), "/x%3Fy");
}

#[test]
fn ambiguous_paths_are_refused() {
    let cases = [
        ("a", PathError::NotAbsolute),
        ("/a%2Fb", PathError::EncodedSlash),
        ("/a%2fb", PathError::EncodedSlash),
        ("/a%5cb", PathError::Backslash),
        ("/a\\b", PathError::Backslash),
        ("/a%00", PathError::ControlChar),
        ("/a%0d%0a", PathError::ControlChar),
        ("/%C0%AF", PathError::InvalidUtf8),
        ("/%c0%ae%c0%ae/", PathError::InvalidUtf8),
        ("/%zz", PathError::BadEscape),
        ("/%4", PathError::BadEscape),
        ("/..", PathError::EscapesRoot),
        ("/a/../../b", PathError::EscapesRoot),
        ("/%2e%2e/etc", PathError::EscapesRoot),
        ("/public/..;/admin", PathError::DotSegmentParam),
        ("/public/.;x/admin", PathError::DotSegmentParam),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize(raw), Err(want), "{raw:?}");
    }
}

#[test]
fn fast_path_agrees_with_the_full_one() {
    for p in [
        "/",
        "/a/b",
        "/a/b/",
        "/a.b/c.d",
        "/a/.hidden",
        "/a//b",
        "/a/./b",
        "/a/..",
        "/..;/x",
        "/a/",
        "/a/b/.",
    ] {
        if is_plain(p.as_bytes()) {
            // A plain path must be a fixed point of the full algorithm.
            assert_eq!(normalize_full(p), Ok(p.to_string()), "{p:?}");
        }
    }
    // Against the first, one-match-per-byte version, on every string of up to five pieces.
    fn reference(bytes: &[u8]) -> bool {
        let mut prev = b'/';
        for (i, &b) in bytes.iter().enumerate().skip(1) {
            let ok = match b {
                b'%' | b'\\' | 0..=0x20 | 0x7f..=0xff => false,
                b'/' => prev != b'/',
                b'.' if prev == b'/' => {
                    !matches!(bytes.get(i + 1), None | Some(b'/' | b'.' | b';'))
                }
                _ => true,
            };
            if !ok {
                return false;
            }
            prev = b;
        }
        true
    }
    let pieces = [
        "", "/", "a", ".", "..", ";", "%", "%41", "\\", " ", "\u{7f}", "é", "-",
    ];
    let mut plain = 0;
    for p in crate::test_inputs::concatenations(&pieces, 5) {
        let p = format!("/{p}");
        assert_eq!(is_plain(p.as_bytes()), reference(p.as_bytes()), "{p:?}");
        if is_plain(p.as_bytes()) {
            assert_eq!(normalize_full(&p), Ok(p.clone()), "{p:?}");
            plain += 1;
        }
    }
    assert!(plain > 5_000, "{plain}");
    assert!(is_plain(b"/a/b/"));
    assert!(is_plain(b"/a/.hidden"));
    assert!(is_plain(b"/.portcullis/auth"));
    assert!(!is_plain(b"/a/./b"));
    assert!(!is_plain(b"/a/.."));
    assert!(!is_plain(b"/a/."));
    assert!(!is_plain(b"/a/.;x/b"));
    assert!(!is_plain(b"/a/..x"));
    assert!(!is_plain(b"/a//b"));
    assert!(!is_plain(b"/%41"));
}

#[test]
fn raw_non_ascii_is_percent_encoded() {
    assert_eq!(ok("/café"), "/caf%C3%A9");
    assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
    assert_eq!(normalize("/caf\u{e9}/../x"), Ok("/x".to_string()));
}

#[test]
fn lenient_readings() {
    for (given, want) in [
        ("/admin", "/admin"),
        ("/ADMIN/x", "/admin/x"),
        ("/Admin/", "/admin/"),
        ("/admin./x", "/admin/x"),
        ("/admin%20/x", "/admin/x"),
        ("/admin. . /x", "/admin/x"),
        ("/admin::$DATA", "/admin"),
        ("/admin::$DATA/x", "/admin/x"),
        ("/admin:$i30:$INDEX_ALLOCATION/x", "/admin/x"),
        ("/admin.::$data./", "/admin/"),
        ("/%61dmin", "/admin"),
        ("/caf%C3%A9", "/café"),
        ("/CAF%C3%89", "/café"),
        ("/%C5%BFettings", "/settings"),
        ("/%E2%84%AAey", "/key"),
        ("/a/.../b", "/a/b"),
        ("/admin.json", "/admin"),
        ("/ADMIN.json/", "/admin/"),
        ("/admin.x/y", "/admin.x/y"),
        ("/index.php/admin", "/admin"),
        ("/INDEX.PHP/admin/x", "/admin/x"),
        ("/index.php", "/index"),
        ("/(S(abc123))/admin", "/admin"),
        ("/(A(x))/(S(y))/admin", "/admin"),
        ("/style.css", "/style"),
        ("/.hidden", "/.hidden"),
        ("/", "/"),
    ] {
        assert_eq!(lenient_reading(given), want, "{given}");
    }
    assert!(matches!(
        lenient_reading("/plain/path"),
        std::borrow::Cow::Borrowed(_)
    ));
    assert_eq!(lenient_prefix("/api/V1.0"), "/api/v1.0");
    assert_eq!(lenient_prefix("/Admin."), "/admin");
}

/// Never a panic, whatever the characters (slicing must stay on character boundaries).
#[test]
fn lenient_reading_of_any_text() {
    for path in [
        "/wiki/%E6%97%A5%E6%9C%AC%E8%AA%9E",
        "/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8",
        "/\u{4e2d}\u{6587}\u{9875}\u{9762}",
        "/blog/\u{395}\u{3bb}\u{3bb}\u{3b7}\u{3bd}\u{3b9}\u{3ba}\u{3ac}",
        "/stra\u{df}e-1234",
        "/\u{65e5}.\u{672c}",
        "/\u{65e5}:\u{672c}",
        "/(\u{65e5}(x))",
        "/x.\u{672c}\u{672c}\u{672c}\u{672c}",
        "/\u{672c}\u{672c}\u{672c}.php/x",
    ] {
        let _ = lenient_reading(path);
    }
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let alphabet: Vec<char> = "aA.:/ %()phP$\u{e9}\u{65e5}\u{17f}\u{212a}\u{130}"
        .chars()
        .collect();
    for _ in 0..20_000 {
        let mut p = String::from("/");
        for _ in 0..(state % 12) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            p.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        let _ = lenient_reading(&p);
    }
}

#[test]
fn prefixes_respect_segments() {
    assert!(under_prefix("/api", "/api"));
    assert!(under_prefix("/api/x", "/api"));
    assert!(!under_prefix("/apix", "/api"));
    assert!(under_prefix("/static/a.css", "/static/"));
    assert!(under_prefix("/static", "/static/"));
    assert!(!under_prefix("/staticx", "/static/"));
    assert!(under_prefix("/anything", "/"));
}
