//! The built-in directory in tests: users files, TOTP codes computed here (RFC 6238, the
//! way an authenticator app does), the login form spoken over raw HTTP, and the real browser
//! (Debian's chromium through playwright-core, tests/browser/login.mjs).
#![allow(dead_code)]

use super::{raw_request, RawResponse, DEADLINE};
use hmac::{Hmac, Mac};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// A TOTP secret for tests (base32).
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// One user of a users file.
pub struct TestUser<'a> {
    pub name: &'a str,
    pub password: &'a str,
    /// More YAML lines for the entry (`email: ...`, `totp: ...`), each indented by 4.
    pub extra: &'a [&'a str],
}

/// A users file for `users` (passwords hashed here with the real argon2id hasher).
pub fn users_yaml(users: &[TestUser<'_>]) -> String {
    let mut out = String::from("users:\n");
    for u in users {
        let hash = portcullis::password::hash(u.password).expect("hashing");
        out.push_str(&format!("  {}:\n    password: \"{hash}\"\n", u.name));
        for line in u.extra {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// A config head with a memory session store and a local provider `local` on `users.yaml`;
/// `provider_extra` lines go into the provider (indented by 4), `routes` follows.
pub fn config(
    server_extra: &str,
    session_extra: &str,
    provider_extra: &str,
    routes: &str,
) -> String {
    // These tests log in many times from 127.0.0.1: the built-in `auth-endpoints` limiter
    // (burst 10, tests/rate_limits.rs) is made roomy unless the test defines limiters itself.
    // Last, so that the lines of everything else keep their numbers.
    let limits = if routes.contains("rate_limits:") {
        ""
    } else if routes.ends_with('\n') {
        "rate_limits:\n  - { name: auth-endpoints, key: client_ip, limit: 6000/m, burst: 1000 }\n"
    } else {
        "\nrate_limits:\n  - { name: auth-endpoints, key: client_ip, limit: 6000/m, burst: 1000 }\n"
    };
    format!(
        "server:
  listen: [\"127.0.0.1:@HTTP@\"]
  threads: 1
  public_url: http://127.0.0.1:@HTTP@
{server_extra}admin:
  listen: 127.0.0.1:@ADMIN@
session:
  secrets: [\"{SECRET}\"]
  cookie: {{ secure: false }}
{session_extra}providers:
  - id: local
    type: local
    users_file: users.yaml
{provider_extra}routes:
{routes}{limits}"
    )
}

/// The TOTP code of `secret_b32` at Unix time `t` (SHA-1, 6 digits, 30 s).
pub fn totp_at(secret_b32: &str, t: u64) -> String {
    let key = data_encoding::BASE32_NOPAD
        .decode(secret_b32.as_bytes())
        .expect("a base32 secret");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).expect("any key length");
    mac.update(&(t / 30).to_be_bytes());
    let h = mac.finalize().into_bytes();
    let o = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[o]) & 0x7f) << 24
        | u32::from(h[o + 1]) << 16
        | u32::from(h[o + 2]) << 8
        | u32::from(h[o + 3]);
    format!("{:06}", bin % 1_000_000)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The current code, waiting first if the step ends within `margin` seconds (so the code is
/// still valid when it arrives, whatever the test does in between).
pub async fn fresh_code(secret_b32: &str, margin: u64) -> String {
    let left = 30 - unix_now() % 30;
    if left <= margin {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
    totp_at(secret_b32, unix_now())
}

/// A login form as a client received it: its hidden state and the binding cookie.
#[derive(Debug, Clone)]
pub struct Form {
    pub state: String,
    /// `name=value` of the binding cookie (`None` when the answer set none).
    pub cookie: Option<String>,
    pub status: u16,
    pub body: String,
}

/// The value of the hidden `state` input in a page.
pub fn state_of(body: &str) -> Option<String> {
    let at = body.find("name=\"state\" value=\"")? + "name=\"state\" value=\"".len();
    let end = body[at..].find('"')?;
    Some(body[at..at + end].to_string())
}

/// `name=value` of every `Set-Cookie` of a response that sets a value.
pub fn set_cookies(r: &RawResponse) -> Vec<String> {
    r.header_all("set-cookie")
        .into_iter()
        .filter_map(|c| c.split(';').next())
        .filter(|c| !c.ends_with('='))
        .map(str::to_string)
        .collect()
}

/// The session cookie set by a response (`_portcullis=...`), if any.
pub fn session_cookie(r: &RawResponse) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with("_portcullis="))
}

/// A client of the form on 127.0.0.1:`port`, optionally claiming a client address through
/// `X-Forwarded-For` (believed when 127.0.0.1 is a trusted proxy).
#[derive(Clone)]
pub struct FormClient {
    pub port: u16,
    pub xff: Option<String>,
}

impl FormClient {
    pub fn new(port: u16) -> FormClient {
        FormClient { port, xff: None }
    }

    pub fn from_address(port: u16, ip: &str) -> FormClient {
        FormClient {
            port,
            xff: Some(ip.to_string()),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn headers<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut h: Vec<(&str, &str)> = vec![("Accept", "text/html")];
        if let Some(ip) = &self.xff {
            h.push(("X-Forwarded-For", ip));
        }
        h.extend_from_slice(extra);
        h
    }

    /// `GET /.portcullis/login?rd=...`.
    pub async fn open(&self, rd: &str) -> Form {
        let target = format!(
            "/.portcullis/login?rd={}",
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        );
        let r = raw_request(
            self.port,
            "GET",
            &self.host(),
            &target,
            &self.headers(&[]),
            b"",
        )
        .await;
        Form {
            state: state_of(&r.text()).unwrap_or_default(),
            cookie: set_cookies(&r)
                .into_iter()
                .find(|c| c.contains("_login_form=")),
            status: r.status,
            body: r.text(),
        }
    }

    /// POSTs `fields` (plus `state`) with `cookie`, as the form page would (same Origin).
    pub async fn post(
        &self,
        state: &str,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
    ) -> RawResponse {
        let origin = format!("http://{}", self.host());
        self.post_raw(state, cookie, fields, &[("Origin", &origin)])
            .await
    }

    /// POSTs with exactly the given extra headers (no Origin unless given).
    pub async fn post_raw(
        &self,
        state: &str,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> RawResponse {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.append_pair("state", state);
        for (k, v) in fields {
            body.append_pair(k, v);
        }
        let body = body.finish();
        let mut headers = self.headers(extra);
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        if let Some(c) = cookie {
            headers.push(("Cookie", c));
        }
        raw_request(
            self.port,
            "POST",
            &self.host(),
            "/.portcullis/login",
            &headers,
            body.as_bytes(),
        )
        .await
    }

    /// Opens the form and posts a user name and password; the answer to the POST and the form.
    pub async fn password(&self, rd: &str, user: &str, password: &str) -> (RawResponse, Form) {
        let form = self.open(rd).await;
        assert_eq!(form.status, 200, "the form: {}", form.body);
        let r = self
            .post(
                &form.state,
                form.cookie.as_deref(),
                &[("username", user), ("password", password)],
            )
            .await;
        (r, form)
    }
}

/// Runs the browser script with `input` (see tests/browser/login.mjs) and returns its report.
pub fn browser(input: serde_json::Value) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/login.mjs");
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed: run scripts/setup"
    );
    let child = Command::new("node")
        .arg(&script)
        .arg(input.to_string())
        .current_dir(root.join("tests/browser"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running node (scripts/setup installs it)");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(DEADLINE * 9) {
        Ok(out) => out.expect("the browser's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("the browser script did not finish");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from the browser:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        report.get("error").is_none(),
        "the browser failed: {}\n{}",
        report["error"],
        serde_json::to_string_pretty(&report["steps"]).unwrap_or_default()
    );
    report
}

/// The last page the browser showed.
pub fn last_step(report: &serde_json::Value) -> &serde_json::Value {
    report["steps"]
        .as_array()
        .and_then(|s| s.last())
        .expect("at least one step")
}
