//! Real app servers behind the real binary: what the app *executed* is what was authorized.
//!
//! The other suites read the bytes an upstream received; here the upstream is a real app
//! server that turns them into a handler call its own way, and the test reads which handler
//! ran, for which method and path (`tests/apps/`, [`AppServer`]):
//!
//! - the Flask app under **gunicorn** (the usual production stack; it takes a `SCRIPT_NAME`
//!   header from a loopback peer as the script name) and under **werkzeug's development
//!   server** (it runs lower-case methods and `admin` without a leading slash);
//! - the Express app under **Express 5** and **Express 4** (case-insensitive, not strict:
//!   `/ADMIN` and `/admin/` are `/admin`).
//!
//! Portcullis serves `/` and `/public` to anyone, `/admin` to the group `admins` (alice) only,
//! and `/files` to any logged-in user except for `DELETE`. Every attack in [`ATTACKS`] is sent
//! byte for byte once **directly** to the app — where the test asserts it runs a handler that
//! bob may not run on exactly the servers listed in [`Attack::opens`], proving that the attack
//! is real there — and then **through Portcullis** anonymously, as bob (staff) and as alice
//! (admins), where no handler may run that the identity may not reach: the admin handler only
//! for alice, the files handler only for a logged-in user and never for `DELETE`.

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use support::apps::{AppKind, AppServer, Run};
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{raw_or_closed, Answer, Portcullis, Setup};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

use AppKind::{Express4, Express5, Gunicorn, Werkzeug};

const FLASK: &[AppKind] = &[Gunicorn, Werkzeug];
const EXPRESS: &[AppKind] = &[Express5, Express4];
const ALL: &[AppKind] = &[Gunicorn, Werkzeug, Express5, Express4];
const NONE: &[AppKind] = &[];

/// Who sends a request through Portcullis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    /// Logged in, in `staff` but not in `admins`.
    Bob,
    /// Logged in, in `admins`.
    Alice,
}

/// Whether `run` is a handler run that `who` may not cause: the admin handler for anyone but
/// alice, the files handler for anonymous, and the files handler for `DELETE` for anyone.
fn forbidden(run: &Run, who: Who) -> bool {
    match run.handler() {
        "admin" => who != Who::Alice,
        "files" => who == Who::Anonymous || run.method() == "DELETE",
        _ => false,
    }
}

/// One request, sent as is. `{probe}` in `line`, `headers` or `body` is replaced by the
/// request's probe id, which also goes into an `X-Probe` header after `Host: app.test`.
struct Attack {
    what: &'static str,
    /// The request line, without CRLF.
    line: &'static [u8],
    /// Further header lines, without CRLF.
    headers: &'static [&'static str],
    /// Sent after the head as is (give the framing headers yourself).
    body: &'static [u8],
    /// The servers on which this request, sent directly, runs a handler bob may not run.
    opens: &'static [AppKind],
}

const fn get(what: &'static str, line: &'static [u8], opens: &'static [AppKind]) -> Attack {
    Attack {
        what,
        line,
        headers: &[],
        body: b"",
        opens,
    }
}

const fn with_header(
    what: &'static str,
    line: &'static [u8],
    headers: &'static [&'static str],
    opens: &'static [AppKind],
) -> Attack {
    Attack {
        what,
        line,
        headers,
        body: b"",
        opens,
    }
}

/// The smuggled request some attacks hide in a body: if an app server ever read it as a
/// request of its own, the admin handler would run with this probe.
const SMUGGLED: &[u8] = b"GET /admin HTTP/1.1\r\nHost: app.test\r\nX-Probe: {probe}\r\n\r\n";

const ATTACKS: &[Attack] = &[
    // ---- headers an app server or a common middleware turns into the path or the method ----
    with_header(
        "SCRIPT_NAME header: gunicorn strips it off the path, Flask routes /admin",
        b"GET /public/admin HTTP/1.1",
        &["SCRIPT_NAME: /public"],
        &[Gunicorn],
    ),
    with_header(
        "script_name (gunicorn upper-cases header names)",
        b"GET /public/admin HTTP/1.1",
        &["script_name: /public"],
        &[Gunicorn],
    ),
    with_header(
        "Script_Name",
        b"GET /public/admin HTTP/1.1",
        &["Script_Name: /public"],
        &[Gunicorn],
    ),
    with_header(
        "SCRIPT_NAME twice",
        b"GET /public/admin HTTP/1.1",
        &["SCRIPT_NAME: /public", "SCRIPT_NAME: /public"],
        &[Gunicorn],
    ),
    with_header(
        "SCRIPT_NAME with a space before the colon",
        b"GET /public/admin HTTP/1.1",
        &["SCRIPT_NAME : /public"],
        NONE,
    ),
    with_header(
        "SCRIPT_NAME folded into another header (obs-fold)",
        b"GET /public/admin HTTP/1.1",
        &["X-Note: a\r\n SCRIPT_NAME: /public"],
        NONE,
    ),
    with_header(
        "SCRIPT-NAME (a dash: another header to gunicorn)",
        b"GET /public/admin HTTP/1.1",
        &["SCRIPT-NAME: /public"],
        NONE,
    ),
    with_header(
        "X-Script-Name (the ReverseProxied snippet)",
        b"GET /public/admin HTTP/1.1",
        &["X-Script-Name: /public"],
        FLASK,
    ),
    with_header(
        "PATH_INFO header",
        b"GET /public/x HTTP/1.1",
        &["PATH_INFO: /admin"],
        NONE,
    ),
    with_header(
        "X-Original-URL",
        b"GET /public/x HTTP/1.1",
        &["X-Original-URL: /admin"],
        NONE,
    ),
    Attack {
        what: "X-HTTP-Method-Override: DELETE on POST (Flask's pattern, npm method-override)",
        line: b"POST /files/x HTTP/1.1",
        headers: &["X-HTTP-Method-Override: DELETE", "Content-Length: 0"],
        body: b"",
        opens: ALL,
    },
    // ---- methods: werkzeug runs any spelling as its upper-case form ----
    get("delete", b"delete /files/x HTTP/1.1", &[Werkzeug]),
    get("Delete", b"Delete /files/x HTTP/1.1", &[Werkzeug]),
    get("dELETE", b"dELETE /files/x HTTP/1.1", &[Werkzeug]),
    get("get /admin", b"get /admin HTTP/1.1", &[Werkzeug]),
    get("Get /ADMIN", b"Get /ADMIN HTTP/1.1", NONE),
    with_header(
        "X-HTTP-Method-Override: DELETE on GET (the Flask pattern takes any method)",
        b"GET /files/x HTTP/1.1",
        &["X-HTTP-Method-Override: DELETE"],
        FLASK,
    ),
    // ---- methods a proxy might wave through ----
    get("OPTIONS /admin", b"OPTIONS /admin HTTP/1.1", ALL),
    with_header(
        "CORS preflight OPTIONS /admin",
        b"OPTIONS /admin HTTP/1.1",
        &[
            "Origin: http://evil.test",
            "Access-Control-Request-Method: DELETE",
        ],
        ALL,
    ),
    get("HEAD /admin", b"HEAD /admin HTTP/1.1", ALL),
    get("TRACE /admin", b"TRACE /admin HTTP/1.1", EXPRESS),
    get("PROPFIND /admin", b"PROPFIND /admin HTTP/1.1", EXPRESS),
    // ---- letter case, trailing slashes and dots, suffixes ----
    get("/ADMIN", b"GET /ADMIN HTTP/1.1", EXPRESS),
    get("/Admin/", b"GET /Admin/ HTTP/1.1", EXPRESS),
    get("/aDmIn/x", b"GET /aDmIn/x HTTP/1.1", EXPRESS),
    get("/admin/", b"GET /admin/ HTTP/1.1", EXPRESS),
    get("/admin.", b"GET /admin. HTTP/1.1", NONE),
    get("/admin./x", b"GET /admin./x HTTP/1.1", NONE),
    get("/admin.json", b"GET /admin.json HTTP/1.1", NONE),
    get("/admin;x", b"GET /admin;x HTTP/1.1", NONE),
    get("/admin;x/y", b"GET /admin;x/y HTTP/1.1", NONE),
    get("/admin%20", b"GET /admin%20 HTTP/1.1", NONE),
    get("/ADMIN%2e", b"GET /ADMIN%2e HTTP/1.1", NONE),
    // ---- percent-encoding ----
    get("/%61dmin (werkzeug decodes)", b"GET /%61dmin HTTP/1.1", FLASK),
    get("/%41DMIN", b"GET /%41DMIN HTTP/1.1", NONE),
    get("/%61DMIN/x", b"GET /%61DMIN/x HTTP/1.1", NONE),
    get("/admin%2Fx (encoded slash)", b"GET /admin%2Fx HTTP/1.1", FLASK),
    get("/admin%2fx", b"GET /admin%2fx HTTP/1.1", FLASK),
    get(
        "/public%2F..%2Fadmin",
        b"GET /public%2F..%2Fadmin HTTP/1.1",
        NONE,
    ),
    get("/public/..%2Fadmin", b"GET /public/..%2Fadmin HTTP/1.1", NONE),
    get("/admin%00", b"GET /admin%00 HTTP/1.1", NONE),
    get("/%2561dmin (double encoding)", b"GET /%2561dmin HTTP/1.1", NONE),
    get("/admin% (a bare %)", b"GET /admin% HTTP/1.1", NONE),
    get("/admin%c0%af", b"GET /admin%c0%afx HTTP/1.1", NONE),
    // ---- dot segments and slashes ----
    get("/public/../admin", b"GET /public/../admin HTTP/1.1", NONE),
    get(
        "/public/%2e%2e/admin",
        b"GET /public/%2e%2e/admin HTTP/1.1",
        NONE,
    ),
    get("/%2e%2e/admin", b"GET /%2e%2e/admin HTTP/1.1", NONE),
    get("/../admin", b"GET /../admin HTTP/1.1", NONE),
    get(
        "/admin/../public/x (the app would not resolve the dots)",
        b"GET /admin/../public/x HTTP/1.1",
        ALL,
    ),
    get(
        "/admin/%2e%2e/public/x",
        b"GET /admin/%2e%2e/public/x HTTP/1.1",
        ALL,
    ),
    get("/admin/.", b"GET /admin/. HTTP/1.1", ALL),
    get("//admin", b"GET //admin HTTP/1.1", FLASK),
    get("///admin", b"GET ///admin HTTP/1.1", FLASK),
    get("/public//admin", b"GET /public//admin HTTP/1.1", NONE),
    get("\\admin", b"GET \\admin HTTP/1.1", NONE),
    get("/public\\..\\admin", b"GET /public\\..\\admin HTTP/1.1", NONE),
    // ---- request-target forms ----
    get("admin (no leading slash)", b"GET admin HTTP/1.1", &[Werkzeug]),
    get("admin/x", b"GET admin/x HTTP/1.1", &[Werkzeug]),
    get("./admin", b"GET ./admin HTTP/1.1", NONE),
    get(
        "absolute-form http://app.test/admin",
        b"GET http://app.test/admin HTTP/1.1",
        ALL,
    ),
    get(
        "absolute-form HTTP://APP.TEST/admin",
        b"GET HTTP://APP.TEST/admin HTTP/1.1",
        ALL,
    ),
    get(
        "absolute-form with another authority",
        b"GET http://other.test/admin HTTP/1.1",
        ALL,
    ),
    get(
        "scheme-relative //app.test/admin",
        b"GET //app.test/admin HTTP/1.1",
        NONE,
    ),
    get("fragment /admin#x", b"GET /admin#x HTTP/1.1", ALL),
    get(
        "fragment /admin#/../public/x",
        b"GET /admin#/../public/x HTTP/1.1",
        ALL,
    ),
    get(
        "fragment /public/x#/../../admin",
        b"GET /public/x#/../../admin HTTP/1.1",
        NONE,
    ),
    get(
        "HTTP/0.9 GET /admin",
        b"GET /admin",
        &[Werkzeug, Express5, Express4],
    ),
    // ---- bytes Python's str.split() reads as whitespace ----
    get("/admin\\x85 (NEL)", b"GET /admin\x85 HTTP/1.1", &[Werkzeug]),
    get("/admin\\xa0 (NBSP)", b"GET /admin\xa0 HTTP/1.1", &[Werkzeug]),
    get("/admin\\x1f", b"GET /admin\x1f HTTP/1.1", &[Werkzeug]),
    get("/admin\\x0b", b"GET /admin\x0b HTTP/1.1", &[Werkzeug]),
    // ---- a request hidden in a body, for an app server that reads the framing differently
    Attack {
        what: "Content-Length and Transfer-Encoding, a request in the body",
        line: b"POST /public/x HTTP/1.1",
        headers: &["Content-Length: 4", "Transfer-Encoding: chunked"],
        body: b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\nX-Probe: {probe}\r\n\r\n",
        opens: NONE,
    },
    Attack {
        what: "chunk size with an extension, a request after the last chunk",
        line: b"POST /public/x HTTP/1.1",
        headers: &["Transfer-Encoding: chunked"],
        body: b"5;a=\"x\r\n\"\r\nhello\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\nX-Probe: {probe}\r\n\r\n",
        opens: NONE,
    },
    Attack {
        what: "Transfer-Encoding: chunked, identity",
        line: b"POST /public/x HTTP/1.1",
        headers: &["Transfer-Encoding: chunked, identity", "Content-Length: 60"],
        body: SMUGGLED,
        opens: NONE,
    },
    Attack {
        what: "chunked framing with bare LF",
        line: b"POST /public/x HTTP/1.1",
        headers: &["Transfer-Encoding: chunked"],
        body: b"5\nhello\n0\n\nGET /admin HTTP/1.1\r\nHost: app.test\r\nX-Probe: {probe}\r\n\r\n",
        opens: NONE,
    },
    Attack {
        what: "chunk size 0x5",
        line: b"POST /public/x HTTP/1.1",
        headers: &["Transfer-Encoding: chunked"],
        body: b"0x5\r\nhello\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\nX-Probe: {probe}\r\n\r\n",
        opens: NONE,
    },
    Attack {
        what: "a chunk longer than its size",
        line: b"POST /public/x HTTP/1.1",
        headers: &["Transfer-Encoding: chunked"],
        body: b"2\r\nhello\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\nX-Probe: {probe}\r\n\r\n",
        opens: NONE,
    },
    Attack {
        what: "Transfer-Encoding: Chunked (case), a request after the last chunk",
        line: b"POST /public/x HTTP/1.1",
        headers: &["Transfer-Encoding: Chunked"],
        body: b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\nX-Probe: {probe}\r\n\r\n",
        opens: NONE,
    },
    Attack {
        what: "Content-Length smaller than the body, the rest a request",
        line: b"POST /public/x HTTP/1.1",
        headers: &["Content-Length: 0"],
        body: SMUGGLED,
        opens: NONE,
    },
];

struct World {
    #[allow(dead_code)] // kept alive for the test's duration
    idp: Idp,
    app: AppServer,
    pc: Portcullis,
}

impl World {
    fn start(kind: AppKind) -> World {
        let app = AppServer::start(kind);
        let setup = Setup::new();
        let base = format!("http://127.0.0.1:{}", setup.http);
        let idp = Idp::start(IdpConfig::default().client(IdpClient::new(
            "portcullis",
            "portcullis-secret",
            &format!("{base}/.portcullis/callback"),
        )));
        let up = app.url();
        let yaml = format!(
            "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {base}\n\
             admin:\n  listen: 127.0.0.1:@ADMIN@\n\
             session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
             providers:\n  - id: test\n    type: oidc\n    issuer: {issuer}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
             routes:\n\
             \x20 - {{ path: /, upstream: \"{up}\", auth: none }}\n\
             \x20 - {{ path: /public, upstream: \"{up}\", auth: none }}\n\
             \x20 - {{ path: /admin, upstream: \"{up}\", allow: {{ groups: [admins] }} }}\n\
             \x20 - {{ path: /files, upstream: \"{up}\", deny: {{ methods: [DELETE] }} }}\n",
            issuer = idp.issuer(),
        );
        let pc = setup.start(&yaml);
        World { idp, app, pc }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.pc.http_port())
    }

    /// Logs `user` in at the IdP and returns the `Cookie` header value of the session.
    async fn session_of(&self, user: &str) -> String {
        let browser = Browser::new();
        let page = browser
            .login(&format!("{}/files/home", self.base()), user, PASSWORD)
            .await;
        assert_eq!(page.status, 200, "{user} logs in: {}", page.body);
        let value = browser
            .cookie_for(&self.base(), "_portcullis")
            .expect("a session cookie after login");
        format!("_portcullis={value}")
    }

    /// Sends `request` through Portcullis: the status, or `None` when it closed the
    /// connection without one.
    async fn through(&self, request: &[u8]) -> Option<u16> {
        match raw_or_closed(self.pc.http_port(), request).await {
            Answer::Response(r) => Some(r.status),
            Answer::Closed(_) => None,
        }
    }
}

/// The bytes of `attack` with probe id `probe` and an optional session cookie.
fn request_bytes(attack: &Attack, probe: &str, cookie: Option<&str>) -> Vec<u8> {
    let fill = |b: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(b.len());
        let mut rest = b;
        while let Some(i) = rest.windows(7).position(|w| w == b"{probe}") {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(probe.as_bytes());
            rest = &rest[i + 7..];
        }
        out.extend_from_slice(rest);
        out
    };
    let mut req = fill(attack.line);
    req.extend_from_slice(
        format!("\r\nHost: app.test\r\nX-Probe: {probe}\r\nAccept: application/json\r\n")
            .as_bytes(),
    );
    for h in attack.headers {
        req.extend_from_slice(&fill(h.as_bytes()));
        req.extend_from_slice(b"\r\n");
    }
    if let Some(c) = cookie {
        req.extend_from_slice(format!("Cookie: {c}\r\n").as_bytes());
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    req.extend_from_slice(&fill(attack.body));
    req
}

/// Sends `request` straight to the app and returns the first line of what it answered (or
/// how the connection ended). Unlike the proxy, an app server may leave such requests
/// hanging: 2 s without a close counts as an answer too.
async fn direct(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(request).await?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(2), talk).await {
        Ok(Ok(buf)) if buf.is_empty() => "closed".into(),
        Ok(Ok(buf)) => {
            let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
            String::from_utf8_lossy(line).trim_end().to_string()
        }
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "no answer in 2 s".into(),
    }
}

fn describe(runs: &[Run]) -> String {
    if runs.is_empty() {
        return "no handler ran".into();
    }
    runs.iter()
        .map(|r| {
            format!(
                "{} {} {} (script_name {:?})",
                r.handler(),
                r.method(),
                r.path(),
                r.script_name()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sends every attack directly and through Portcullis as everyone; fails with the whole
/// table if an attack ran a forbidden handler through Portcullis (a bypass) or if the direct
/// run disagrees with [`Attack::opens`].
async fn attack_through_portcullis(kind: AppKind) {
    let w = World::start(kind);
    w.pc.ready().await;
    let bob = w.session_of("bob").await;
    let alice = w.session_of("alice").await;
    let name = kind.name();

    let mut table = String::new();
    let mut bypasses = Vec::new();
    let mut wrong_direct = Vec::new();
    let mut probes: Vec<(String, Who)> = Vec::new();
    for (i, attack) in ATTACKS.iter().enumerate() {
        // Directly: proves the attack against this server (or that it does not apply).
        let probe = format!("{name}-{i}-direct");
        let answer = direct(w.app.port(), &request_bytes(attack, &probe, None)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let runs = w.app.runs_of(&probe);
        let opened = runs.iter().any(|r| forbidden(r, Who::Bob));
        let _ = writeln!(
            table,
            "{i:2} {}\n     direct: {answer}: {}",
            attack.what,
            describe(&runs)
        );
        if opened != attack.opens.contains(&kind) {
            wrong_direct.push(format!(
                "{i} {}: directly {answer}: {} (expected {})",
                attack.what,
                describe(&runs),
                if attack.opens.contains(&kind) {
                    "a handler bob may not run"
                } else {
                    "none that bob may not run"
                }
            ));
        }
        // Through Portcullis, as everyone.
        for (who, cookie) in [
            (Who::Anonymous, None),
            (Who::Bob, Some(bob.as_str())),
            (Who::Alice, Some(alice.as_str())),
        ] {
            let probe = format!("{name}-{i}-{who:?}");
            probes.push((probe.clone(), who));
            let req = request_bytes(attack, &probe, cookie);
            let status = w.through(&req).await;
            let runs = w.app.runs_of(&probe);
            let _ = writeln!(
                table,
                "     {who:?}: {}: {}",
                status.map_or("closed".into(), |s| s.to_string()),
                describe(&runs)
            );
            if runs.iter().any(|r| forbidden(r, who)) {
                bypasses.push(format!(
                    "BYPASS on {name} as {who:?}: {:?} answered {status:?}, ran {}",
                    String::from_utf8_lossy(&req),
                    describe(&runs)
                ));
            }
        }
    }
    // A request hidden in a body could run after its carrier was answered: look again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for run in w.app.runs() {
        let Some((probe, who)) = probes.iter().find(|(p, _)| p == run.probe()) else {
            continue;
        };
        if forbidden(&run, *who) && !bypasses.iter().any(|b| b.contains(probe.as_str())) {
            bypasses.push(format!(
                "BYPASS on {name} as {who:?} (probe {probe}, after its answer): ran {}",
                describe(std::slice::from_ref(&run))
            ));
        }
    }
    eprintln!("--- {name}: what each request ran ---\n{table}");
    assert!(
        bypasses.is_empty(),
        "{} request(s) through Portcullis ran a handler the client may not run:\n{}",
        bypasses.len(),
        bypasses.join("\n")
    );
    assert!(
        wrong_direct.is_empty(),
        "{name} read {} request(s) otherwise than Attack::opens says:\n{}",
        wrong_direct.len(),
        wrong_direct.join("\n")
    );
}

/// The app is real and Portcullis reaches it: anonymous gets the public handler and not the
/// admin one, bob the files handler but not admin nor DELETE, alice the admin handler; and
/// without Portcullis anyone runs the admin handler.
async fn controls(kind: AppKind) {
    let w = World::start(kind);
    w.pc.ready().await;
    let bob = w.session_of("bob").await;
    let alice = w.session_of("alice").await;
    let name = kind.name();
    let req = |line: &'static [u8], probe: &str, cookie: Option<&str>| {
        request_bytes(
            &Attack {
                what: "",
                line,
                headers: &[],
                body: b"",
                opens: NONE,
            },
            probe,
            cookie,
        )
    };
    for (n, (line, who, cookie, status, handler)) in [
        (
            &b"GET /public/x HTTP/1.1"[..],
            Who::Anonymous,
            None,
            200,
            Some("public"),
        ),
        (b"GET / HTTP/1.1", Who::Anonymous, None, 200, Some("root")),
        (b"GET /admin HTTP/1.1", Who::Anonymous, None, 401, None),
        (b"GET /files/x HTTP/1.1", Who::Anonymous, None, 401, None),
        (b"GET /admin HTTP/1.1", Who::Bob, Some(&bob), 403, None),
        (
            b"GET /files/x HTTP/1.1",
            Who::Bob,
            Some(&bob),
            200,
            Some("files"),
        ),
        (b"DELETE /files/x HTTP/1.1", Who::Bob, Some(&bob), 403, None),
        (
            b"GET /admin HTTP/1.1",
            Who::Alice,
            Some(&alice),
            200,
            Some("admin"),
        ),
        (
            b"GET /admin/x HTTP/1.1",
            Who::Alice,
            Some(&alice),
            200,
            Some("admin"),
        ),
        (
            b"DELETE /files/x HTTP/1.1",
            Who::Alice,
            Some(&alice),
            403,
            None,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let probe = format!("{name}-control-{n}");
        let request = req(line, &probe, cookie.map(String::as_str));
        let shown = String::from_utf8_lossy(line);
        assert_eq!(w.through(&request).await, Some(status), "{who:?}: {shown}");
        let runs = w.app.runs_of(&probe);
        assert_eq!(
            runs.iter().map(Run::handler).collect::<Vec<_>>(),
            handler.into_iter().collect::<Vec<_>>(),
            "{who:?}: {shown}: {}",
            describe(&runs)
        );
    }
    // What alice's admin request ran: the path as decided, nothing shifted into SCRIPT_NAME.
    let admin = &w.app.runs_of(&format!("{name}-control-8"))[0];
    assert_eq!(admin.path(), "/admin/x");
    assert_eq!(admin.method(), "GET");
    assert_eq!(admin.script_name(), "");

    // Without Portcullis, anyone runs the admin handler.
    let probe = format!("{name}-control-direct");
    let answer = direct(w.app.port(), &req(b"GET /admin HTTP/1.1", &probe, None)).await;
    assert!(answer.contains(" 200 "), "directly: {answer}");
    let runs = w.app.runs_of(&probe);
    assert_eq!(runs.len(), 1, "{}", describe(&runs));
    assert_eq!(runs[0].handler(), "admin");
}

#[tokio::test]
async fn gunicorn_controls() {
    controls(Gunicorn).await;
}

#[tokio::test]
async fn werkzeug_controls() {
    controls(Werkzeug).await;
}

#[tokio::test]
async fn express5_controls() {
    controls(Express5).await;
}

#[tokio::test]
async fn express4_controls() {
    controls(Express4).await;
}

#[tokio::test]
async fn gunicorn_runs_only_what_was_authorized() {
    attack_through_portcullis(Gunicorn).await;
}

#[tokio::test]
async fn werkzeug_runs_only_what_was_authorized() {
    attack_through_portcullis(Werkzeug).await;
}

#[tokio::test]
async fn express5_runs_only_what_was_authorized() {
    attack_through_portcullis(Express5).await;
}

#[tokio::test]
async fn express4_runs_only_what_was_authorized() {
    attack_through_portcullis(Express4).await;
}

/// The headline case, spelled out: gunicorn takes a client's `SCRIPT_NAME` header from a
/// loopback peer (its default `forwarded_allow_ips`), so `/public/admin` with
/// `SCRIPT_NAME: /public` runs Flask's admin handler; through Portcullis the header is gone
/// and the public handler runs the path that was decided on.
#[tokio::test]
async fn gunicorn_never_gets_a_clients_script_name() {
    let w = World::start(Gunicorn);
    w.pc.ready().await;
    let attack = with_header(
        "",
        b"GET /public/admin HTTP/1.1",
        &["SCRIPT_NAME: /public"],
        NONE,
    );
    let answer = direct(w.app.port(), &request_bytes(&attack, "direct", None)).await;
    assert!(answer.contains(" 200 "), "{answer}");
    let runs = w.app.runs_of("direct");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].handler(), runs[0].path(), runs[0].script_name()),
        ("admin", "/admin", "/public"),
        "gunicorn shifted the path into SCRIPT_NAME"
    );

    assert_eq!(
        w.through(&request_bytes(&attack, "proxied", None)).await,
        Some(200)
    );
    let runs = w.app.runs_of("proxied");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].handler(), runs[0].path(), runs[0].script_name()),
        ("public", "/public/admin", ""),
    );
}

/// Sends `GET /public/x` with each header (and whether gunicorn, reached directly from
/// 127.0.0.1, believes it): directly the app sees the scheme claimed, through Portcullis on
/// plain HTTP the handler runs and sees `http`.
async fn scheme_claims(claims: &[(&'static [&'static str], bool)]) {
    let w = World::start(Gunicorn);
    w.pc.ready().await;
    for (i, (header, believed_directly)) in claims.iter().enumerate() {
        let attack = with_header("", b"GET /public/x HTTP/1.1", header, NONE);
        let header = header[0];
        let probe = format!("scheme-{i}-direct");
        let answer = direct(w.app.port(), &request_bytes(&attack, &probe, None)).await;
        let runs = w.app.runs_of(&probe);
        assert_eq!(
            runs.first().map(Run::scheme),
            Some(if *believed_directly { "https" } else { "http" }),
            "{header} directly: {answer}"
        );

        let probe = format!("scheme-{i}-proxied");
        let status = w.through(&request_bytes(&attack, &probe, None)).await;
        let runs = w.app.runs_of(&probe);
        assert_eq!(
            (status, runs.first().map(Run::scheme)),
            (Some(200), Some("http")),
            "{header} through Portcullis: {}",
            describe(&runs)
        );
    }
}

/// gunicorn believes `X-Forwarded-Proto`, `X-Forwarded-Protocol` and `X-Forwarded-Ssl` from a
/// peer in `forwarded_allow_ips` (127.0.0.1 by default) and sets `wsgi.url_scheme` from them:
/// behind Portcullis on plain HTTP, a client's claim must never make the app see `https`
/// (secure-only logic, redirects, `url_for(_external=True)`).
#[tokio::test]
async fn gunicorn_believes_no_scheme_a_client_claims() {
    scheme_claims(&[
        (&["X-Forwarded-Proto: https"], true),
        (&["X-Forwarded-Ssl: on"], true),
        (&["X-FORWARDED-PROTO: https"], true),
        (&["X_Forwarded_Proto: https"], false),
        (&["Forwarded: proto=https"], false),
        (&["Front-End-Https: on"], false),
        (&["X-Url-Scheme: https"], false),
    ])
    .await;
}

/// `X-Forwarded-Protocol` is one of gunicorn's default `secure_scheme_headers`: sent by a
/// client as `X-Forwarded-Protocol: ssl`, it must not reach gunicorn (which would refuse it
/// beside Portcullis' own `X-Forwarded-Proto: http`, and an app server that reads only it would
/// believe the request came over `https`).
#[tokio::test]
async fn gunicorn_never_gets_a_clients_x_forwarded_protocol() {
    scheme_claims(&[(&["X-Forwarded-Protocol: ssl"], true)]).await;
}
