//! A real OpenID Provider for integration tests, and a browser-like client to log in at it.
//!
//! [`Idp`] runs `tests/idp/server.js` (the npm package `oidc-provider`, see
//! `tests/idp/README.md`) in its own process on a free port of 127.0.0.1, one per test.
//! [`Browser`] keeps cookies, follows redirects and posts the HTML forms it is given, as a
//! browser without JavaScript would; [`login_form_post`] fills in the IdP's login form.
//!
//! Needs `node` on `PATH` (or in `$NODE`) and `npm ci` run once in `tests/idp`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the harness waits for the IdP to start, or for a line to appear.
const WAIT: Duration = Duration::from_secs(10);

/// The password of every built-in user unless [`IdpConfig::password`] says otherwise.
pub const PASSWORD: &str = "password";

/// The one-time code of every user unless [`IdpUser::otp`] says otherwise. A login with it in
/// the form's `otp` field is a step-up login: `acr` [`STEP_UP_ACR`], `amr` `pwd otp mfa`.
pub const OTP: &str = "123456";

/// The `acr` of a login with the right one-time code, whatever the user's own.
pub const STEP_UP_ACR: &str = "urn:portcullis:test:loa:2";

/// A plain HTTP client for talking to the test IdP (and the test's own servers) directly, as
/// reqwest's default client would (redirects followed), but never through a proxy named by
/// `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` in the environment: every server a test talks to
/// is on 127.0.0.1, and a developer's or CI's proxy must not see (or break) that traffic.
pub fn direct_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("building a direct HTTP client")
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// One relying party registered at the IdP. Both `client_secret_basic` and
/// `client_secret_post` are accepted whatever `token_endpoint_auth_method` says.
#[derive(Debug, Clone)]
pub struct IdpClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Default `client_secret_basic`.
    pub token_endpoint_auth_method: Option<String>,
    /// Default `authorization_code` and `refresh_token`.
    pub grant_types: Option<Vec<String>>,
}

impl IdpClient {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> IdpClient {
        IdpClient {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            redirect_uris: vec![redirect_uri.to_string()],
            post_logout_redirect_uris: Vec::new(),
            token_endpoint_auth_method: None,
            grant_types: None,
        }
    }

    /// A client for `client_credentials` only: no redirect URI, no login.
    pub fn service(client_id: &str, client_secret: &str) -> IdpClient {
        IdpClient {
            redirect_uris: Vec::new(),
            ..IdpClient::new(client_id, client_secret, "")
        }
        .grant_types(&["client_credentials"])
    }

    /// The grant types this client may use (e.g. `["client_credentials"]`, or
    /// `["authorization_code", "refresh_token", "client_credentials"]`).
    pub fn grant_types(mut self, grant_types: &[&str]) -> IdpClient {
        self.grant_types = Some(grant_types.iter().map(|g| g.to_string()).collect());
        self
    }

    pub fn redirect_uri(mut self, uri: &str) -> IdpClient {
        self.redirect_uris.push(uri.to_string());
        self
    }

    pub fn post_logout_redirect_uri(mut self, uri: &str) -> IdpClient {
        self.post_logout_redirect_uris.push(uri.to_string());
        self
    }

    fn to_json(&self) -> String {
        let mut o = JsonObject::default();
        o.str("client_id", &self.client_id);
        o.str("client_secret", &self.client_secret);
        o.strs("redirect_uris", &self.redirect_uris);
        o.strs("post_logout_redirect_uris", &self.post_logout_redirect_uris);
        if let Some(m) = &self.token_endpoint_auth_method {
            o.str("token_endpoint_auth_method", m);
        }
        if let Some(g) = &self.grant_types {
            o.strs("grant_types", g);
        }
        o.finish()
    }
}

/// A user to add, or to change: fields left `None` keep the built-in user's value (see the
/// README for alice, bob, carol and dave) or the IdP's default.
#[derive(Debug, Clone, Default)]
pub struct IdpUser {
    pub username: String,
    pub password: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Option<Vec<String>>,
    pub acr: Option<String>,
    pub amr: Option<Vec<String>>,
    /// The one-time code the login form's `otp` field takes (default [`OTP`]).
    pub otp: Option<String>,
    /// Extra string claims, released with the `profile` scope.
    pub claims: Vec<(String, String)>,
}

impl IdpUser {
    pub fn new(username: &str) -> IdpUser {
        IdpUser {
            username: username.to_string(),
            ..IdpUser::default()
        }
    }

    pub fn email(mut self, email: &str) -> IdpUser {
        self.email = Some(email.to_string());
        self
    }

    pub fn password(mut self, password: &str) -> IdpUser {
        self.password = Some(password.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> IdpUser {
        self.name = Some(name.to_string());
        self
    }

    pub fn groups(mut self, groups: &[&str]) -> IdpUser {
        self.groups = Some(groups.iter().map(|g| g.to_string()).collect());
        self
    }

    pub fn amr(mut self, amr: &[&str]) -> IdpUser {
        self.amr = Some(amr.iter().map(|a| a.to_string()).collect());
        self
    }

    pub fn acr(mut self, acr: &str) -> IdpUser {
        self.acr = Some(acr.to_string());
        self
    }

    /// This user's one-time code, instead of [`OTP`].
    pub fn otp(mut self, otp: &str) -> IdpUser {
        self.otp = Some(otp.to_string());
        self
    }

    pub fn claim(mut self, name: &str, value: &str) -> IdpUser {
        self.claims.push((name.to_string(), value.to_string()));
        self
    }

    fn to_json(&self) -> String {
        let mut o = JsonObject::default();
        let opt = |o: &mut JsonObject, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                o.str(k, v);
            }
        };
        opt(&mut o, "password", &self.password);
        opt(&mut o, "email", &self.email);
        opt(&mut o, "name", &self.name);
        opt(&mut o, "preferred_username", &self.preferred_username);
        opt(&mut o, "acr", &self.acr);
        opt(&mut o, "otp", &self.otp);
        if let Some(v) = self.email_verified {
            o.raw("email_verified", if v { "true" } else { "false" });
        }
        if let Some(g) = &self.groups {
            o.strs("groups", g);
        }
        if let Some(a) = &self.amr {
            o.strs("amr", a);
        }
        if !self.claims.is_empty() {
            let mut c = JsonObject::default();
            for (k, v) in &self.claims {
                c.str(k, v);
            }
            o.raw("claims", &c.finish());
        }
        o.finish()
    }
}

/// When the IdP issues refresh tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokens {
    /// To every client allowed the `refresh_token` grant (the default).
    Always,
    /// Only when `offline_access` was granted (needs `prompt=consent`, as OIDC says).
    OfflineAccess,
    Never,
}

/// Everything `server.js` can be told; `IdpConfig::default()` is one client `portcullis` /
/// `portcullis-secret` with redirect URI `http://127.0.0.1:8080/.portcullis/callback`, the
/// built-in users, one-hour tokens.
#[derive(Debug, Clone, Default)]
pub struct IdpConfig {
    pub clients: Vec<IdpClient>,
    /// Added, or merged over the built-in user of the same name.
    pub users: Vec<IdpUser>,
    /// Built-in users to remove.
    pub remove_users: Vec<String>,
    /// Password of users without their own (default [`PASSWORD`]).
    pub password: Option<String>,
    pub id_token_ttl: Option<Duration>,
    pub access_token_ttl: Option<Duration>,
    pub refresh_token_ttl: Option<Duration>,
    /// Lifetime of the IdP's own login session.
    pub session_ttl: Option<Duration>,
    pub refresh_tokens: Option<RefreshTokens>,
    /// Default true: every refresh returns a new refresh token and the old one dies (reusing
    /// it revokes the whole grant).
    pub rotate_refresh_tokens: Option<bool>,
    /// Show a consent form instead of granting every requested scope silently.
    pub consent_form: bool,
    /// Show the logout confirmation form even when `id_token_hint` is given.
    pub logout_prompt_always: bool,
    /// Only `sub`, `acr`, `amr` ... in the ID token; `email`, `groups` ... from userinfo only.
    pub minimal_id_token: bool,
    /// Leeway on token expiry (default none).
    pub clock_tolerance: Option<Duration>,
    /// `RS256` (default), `ES256` or `EdDSA`: the ID token (and JWT access token) algorithm.
    pub signing_alg: Option<String>,
    /// Resource indicator and space-separated scopes: a token request with `resource=` gets a
    /// JWT access token for that audience.
    pub resource_servers: Vec<(String, String)>,
    /// Access token lifetime per resource indicator (default the access token TTL).
    pub resource_server_ttls: Vec<(String, Duration)>,
    /// Play an IdP from before RFC 9207: no `iss` in authorization responses and no
    /// `authorization_response_iss_parameter_supported` in discovery.
    pub without_iss_parameter: bool,
}

impl IdpConfig {
    /// One confidential client with one redirect URI.
    pub fn with_client(client_id: &str, client_secret: &str, redirect_uri: &str) -> IdpConfig {
        IdpConfig::default().client(IdpClient::new(client_id, client_secret, redirect_uri))
    }

    pub fn client(mut self, client: IdpClient) -> IdpConfig {
        self.clients.push(client);
        self
    }

    pub fn user(mut self, user: IdpUser) -> IdpConfig {
        self.users.push(user);
        self
    }

    /// A resource server: a token request with `resource=<indicator>` (code, refresh or
    /// `client_credentials` grant) gets a JWT access token with `aud` = `indicator`, the
    /// requested scopes among `scope` (space-separated), lasting `ttl_secs`.
    pub fn resource_server(mut self, indicator: &str, scope: &str, ttl_secs: u64) -> IdpConfig {
        self.resource_servers
            .push((indicator.to_string(), scope.to_string()));
        self.resource_server_ttls
            .push((indicator.to_string(), Duration::from_secs(ttl_secs)));
        self
    }

    /// ID token and access token lifetime, e.g. a few seconds for refresh tests.
    pub fn token_ttl(mut self, ttl: Duration) -> IdpConfig {
        self.id_token_ttl = Some(ttl);
        self.access_token_ttl = Some(ttl);
        self
    }

    /// The JSON `server.js` takes as its argument.
    pub fn to_json(&self) -> String {
        let mut o = JsonObject::default();
        o.raw("port", "0");
        if !self.clients.is_empty() {
            let clients: Vec<String> = self.clients.iter().map(IdpClient::to_json).collect();
            o.raw("clients", &format!("[{}]", clients.join(",")));
        }
        if !self.users.is_empty() || !self.remove_users.is_empty() {
            let mut u = JsonObject::default();
            for name in &self.remove_users {
                u.raw(name, "null");
            }
            for user in &self.users {
                u.raw(&user.username, &user.to_json());
            }
            o.raw("users", &u.finish());
        }
        if let Some(p) = &self.password {
            o.str("password", p);
        }
        let mut ttl = JsonObject::default();
        for (k, v) in [
            ("id_token", self.id_token_ttl),
            ("access_token", self.access_token_ttl),
            ("refresh_token", self.refresh_token_ttl),
            ("session", self.session_ttl),
        ] {
            if let Some(v) = v {
                ttl.raw(k, &v.as_secs().max(1).to_string());
            }
        }
        o.raw("ttl", &ttl.finish());
        if let Some(r) = self.refresh_tokens {
            let r = match r {
                RefreshTokens::Always => "always",
                RefreshTokens::OfflineAccess => "offline_access",
                RefreshTokens::Never => "never",
            };
            o.str("refresh_tokens", r);
        }
        if let Some(r) = self.rotate_refresh_tokens {
            o.raw("rotate_refresh_tokens", if r { "true" } else { "false" });
        }
        if self.consent_form {
            o.str("consent", "form");
        }
        if self.logout_prompt_always {
            o.str("logout_prompt", "always");
        }
        if self.minimal_id_token {
            o.str("id_token_claims", "minimal");
        }
        if let Some(alg) = &self.signing_alg {
            o.str("signing_alg", alg);
        }
        if self.without_iss_parameter {
            o.raw("iss_parameter", "false");
        }
        if let Some(c) = self.clock_tolerance {
            o.raw("clock_tolerance", &c.as_secs().to_string());
        }
        if !self.resource_servers.is_empty() {
            let mut rs = JsonObject::default();
            for (indicator, scope) in &self.resource_servers {
                let mut one = JsonObject::default();
                one.str("scope", scope);
                let ttl = self
                    .resource_server_ttls
                    .iter()
                    .rev()
                    .find(|(i, _)| i == indicator);
                if let Some((_, ttl)) = ttl {
                    one.raw("access_token_ttl", &ttl.as_secs().max(1).to_string());
                }
                rs.raw(indicator, &one.finish());
            }
            o.raw("resource_servers", &rs.finish());
        }
        o.finish()
    }
}

/// Just enough JSON writing for the config.
#[derive(Default)]
struct JsonObject {
    fields: Vec<String>,
}

impl JsonObject {
    fn raw(&mut self, key: &str, value: &str) {
        self.fields.push(format!("{}:{value}", json_string(key)));
    }

    fn str(&mut self, key: &str, value: &str) {
        self.raw(key, &json_string(value));
    }

    fn strs(&mut self, key: &str, values: &[String]) {
        let items: Vec<String> = values.iter().map(|v| json_string(v)).collect();
        self.raw(key, &format!("[{}]", items.join(",")));
    }

    fn finish(self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// The IdP process
// ---------------------------------------------------------------------------------------------

/// A running IdP; killed when dropped.
pub struct Idp {
    child: Child,
    issuer: String,
    port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Idp {
    /// Starts `tests/idp/server.js` with `config` on a free port and waits for it to listen.
    /// Panics, with the IdP's stderr, if it does not start.
    pub fn start(config: IdpConfig) -> Idp {
        Idp::try_start(config).unwrap_or_else(|e| panic!("starting the test IdP: {e}"))
    }

    pub fn try_start(config: IdpConfig) -> Result<Idp, String> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp");
        if !dir.join("node_modules/oidc-provider").is_dir() {
            return Err(format!(
                "{}/node_modules is missing: run `npm ci` in that directory",
                dir.display()
            ));
        }
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_string());
        let mut child = Command::new(&node)
            .arg(dir.join("server.js"))
            .arg(config.to_json())
            .current_dir(&dir)
            .env_remove("IDP_CONFIG")
            .env_remove("IDP_PORT")
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running `{node}` (is Node.js installed?): {e}"))?;

        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();

        let out = child.stdout.take().expect("piped stdout");
        let lines = Arc::clone(&stdout_lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let issuer = line.strip_prefix("READY ").map(str::to_string);
                lines.lock().expect("idp stdout").push(line);
                if let Some(issuer) = issuer {
                    let _ = ready_tx.send(issuer);
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let text = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.lock()
                    .expect("idp stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let issuer = match ready_rx.recv_timeout(WAIT) {
            Ok(issuer) => issuer,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // Give the reader thread a moment to collect the last of stderr.
                std::thread::sleep(Duration::from_millis(50));
                let stderr = stderr_text.lock().expect("idp stderr").clone();
                return Err(format!("no READY line within {WAIT:?}; stderr:\n{stderr}"));
            }
        };
        let port = issuer
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("unexpected issuer {issuer:?}"))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Idp {
            child,
            issuer,
            port,
            stdout: stdout_lines,
            stderr: stderr_text,
            http,
        })
    }

    /// `http://127.0.0.1:<port>`, exactly as in the ID tokens' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `path` (starting with `/`) on the IdP.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn discovery_url(&self) -> String {
        self.url("/.well-known/openid-configuration")
    }

    /// Every stdout line so far (`READY`, `GRANT`, `GRANT_ERROR`, `LOGIN`, `LOGIN_FAILED`,
    /// `LOGOUT`, `USERINFO`, ...).
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().expect("idp stdout").clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("idp stderr").clone()
    }

    /// Stdout lines whose first word is `event` and which carry every `key=value` in `fields`.
    pub fn count_events(&self, event: &str, fields: &[(&str, &str)]) -> usize {
        self.lines()
            .iter()
            .filter(|line| line_matches(line, event, fields))
            .count()
    }

    /// Successful token-endpoint requests of one grant type.
    pub fn grant_count(&self, grant_type: &str) -> usize {
        self.count_events("GRANT", &[("grant_type", grant_type)])
    }

    /// Successful refresh-token grants so far.
    pub fn refresh_count(&self) -> usize {
        self.grant_count("refresh_token")
    }

    /// Successful authorization-code exchanges so far.
    pub fn code_exchange_count(&self) -> usize {
        self.grant_count("authorization_code")
    }

    /// Refused token-endpoint requests of one grant type.
    pub fn grant_error_count(&self, grant_type: &str) -> usize {
        self.count_events("GRANT_ERROR", &[("grant_type", grant_type)])
    }

    /// Successful logins at the IdP's form.
    pub fn login_count(&self) -> usize {
        self.count_events("LOGIN", &[])
    }

    /// Completed RP-initiated logouts.
    pub fn logout_count(&self) -> usize {
        self.count_events("LOGOUT", &[])
    }

    /// Waits until stdout holds a line for which `pred` is true, and returns it.
    pub async fn wait_for_line(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if start.elapsed() > WAIT {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until [`Idp::count_events`] reaches `at_least` (or the deadline passes) and
    /// returns the count then. Stdout is read by another thread, so a line can trail the HTTP
    /// response it belongs to by a moment.
    pub async fn wait_for_events(
        &self,
        event: &str,
        fields: &[(&str, &str)],
        at_least: usize,
    ) -> usize {
        let start = Instant::now();
        loop {
            let n = self.count_events(event, fields);
            if n >= at_least || start.elapsed() > WAIT {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The IdP's own counter `key` (`grant:refresh_token`, `grant_error:refresh_token`,
    /// `login`, `login_failure`, `logout`, `userinfo:200` ...), exact at the moment of asking.
    /// A key the IdP does not count (see `knownCounter` in tests/idp/server.js) panics with its
    /// name: read as 0, a typo would pass every "nothing happened" check.
    pub async fn counter(&self, key: &str) -> u64 {
        let path = format!("/__test/count?key={}", query_escape(key));
        let resp = self
            .http
            .get(self.url(&path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("IdP counter {key:?}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "IdP counter {key:?}: {status} {text} (an unknown counter name?)"
        );
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("IdP counter {key:?}: {text:?} is no count ({e})"))
    }

    /// Revokes every grant of `sub`: its refresh and access tokens stop working at once.
    pub async fn revoke_user(&self, sub: &str) {
        self.admin(
            reqwest::Method::POST,
            &format!("/__test/revoke?sub={}", query_escape(sub)),
        )
        .await;
    }

    /// Makes the next `count` token-endpoint requests fail with `status` (JSON error body).
    pub async fn fail_token_requests(&self, count: u32, status: u16) {
        self.admin(
            reqwest::Method::POST,
            &format!("/__test/fail-token?count={count}&status={status}"),
        )
        .await;
    }

    /// Delays every token-endpoint request by `delay` (to widen race windows).
    pub async fn delay_token_requests(&self, delay: Duration) {
        let ms = delay.as_millis();
        self.admin(
            reqwest::Method::POST,
            &format!("/__test/delay-token?ms={ms}"),
        )
        .await;
    }

    /// Clears injected failures and delays.
    pub async fn reset_faults(&self) {
        self.admin(reqwest::Method::POST, "/__test/reset").await;
    }

    /// Makes the IdP replace the ID token in its next `count` token responses, to test how a
    /// relying party refuses bad ones. `mode`: `nonce` (another nonce), `no_nonce`, `aud`
    /// (another audience), `iss` (another issuer), `expired` (all four re-signed with the real
    /// key), `unknown_key` (signed by a key under a `kid` not in the JWKS), `wrong_key` (signed
    /// by another key under the real `kid`), `modified` (claims changed after signing) or
    /// `alg_none` (unsigned, `"alg":"none"`).
    pub async fn tamper_id_tokens(&self, mode: &str, count: u32) {
        self.admin(
            reqwest::Method::POST,
            &format!(
                "/__test/tamper-id-token?mode={}&count={count}",
                query_escape(mode)
            ),
        )
        .await;
    }

    /// [`Idp::tamper_id_tokens`] for the next token response only.
    pub async fn tamper_next_id_token(&self, mode: &str) {
        self.tamper_id_tokens(mode, 1).await;
    }

    /// From now on the IdP keeps every token it issues, for [`Idp::issued_tokens`].
    pub async fn capture_tokens(&self) {
        self.admin(reqwest::Method::POST, "/__test/capture-tokens")
            .await;
    }

    /// Every token issued since [`Idp::capture_tokens`]: access, refresh and ID tokens, in
    /// the order issued (to check they never leak anywhere).
    pub async fn issued_tokens(&self) -> Vec<String> {
        let text = self.admin(reqwest::Method::GET, "/__test/tokens").await;
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("/__test/tokens: {e}: {text}"));
        list.iter()
            .flat_map(|t| ["access_token", "refresh_token", "id_token"].map(|k| t[k].clone()))
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// The JWKS the IdP serves at its `jwks_uri` (`/jwks`).
    pub async fn jwks(&self) -> serde_json::Value {
        let resp = self
            .http
            .get(self.url("/jwks"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /jwks: {e}"));
        let text = resp.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("/jwks is not JSON ({e}): {text}"))
    }

    /// A JWT over `payload` (used verbatim: the test gives `iss`, `aud`, `exp` ...; a JSON
    /// string is taken as the raw payload text), made by `POST /__test/sign`. `key`:
    /// - `"real"`: signed with the IdP's JWKS key; header `alg` = the signing alg, `kid` = the
    ///   real kid;
    /// - `"fresh"`: signed with a new key of the same type under a new `kid` not in the JWKS
    ///   (or under the `kid` given in `header`: the wrong key under the real kid);
    /// - `"none"`: header `alg` `none`, empty signature (the token ends with `.`);
    /// - `"hs256_jwks"`: HS256 with the real public key's PEM text (SPKI) as the HMAC secret,
    ///   under the real kid (the RS256/HS256 confusion attack).
    ///
    /// `header` fields (an object, or `Value::Null` for none) are merged over those defaults;
    /// a `null` field removes it. The signature is always made with the key's own algorithm.
    pub async fn sign_jwt(
        &self,
        header: serde_json::Value,
        payload: serde_json::Value,
        key: &str,
    ) -> String {
        let header = if header.is_null() {
            serde_json::json!({})
        } else {
            header
        };
        let body = serde_json::json!({ "header": header, "payload": payload, "key": key });
        let resp = self
            .http
            .post(self.url("/__test/sign"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("IdP admin request /__test/sign: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "IdP admin request /__test/sign: {status} {text}"
        );
        let answer: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("/__test/sign answered non-JSON ({e}): {text}"));
        answer["token"]
            .as_str()
            .unwrap_or_else(|| panic!("/__test/sign answered no token: {text}"))
            .to_string()
    }

    /// A real `grant_type=client_credentials` request with `resource=<resource>` (and `scope`,
    /// unless empty) at the token endpoint, authenticated with `client_secret_basic`; returns
    /// the JWT access token. The client needs the `client_credentials` grant
    /// ([`IdpClient::service`] or [`IdpClient::grant_types`]) and `resource` a
    /// [`IdpConfig::resource_server`]. Panics with the IdP's answer on any error.
    pub async fn client_credentials_token(
        &self,
        client_id: &str,
        client_secret: &str,
        resource: &str,
        scope: &str,
    ) -> String {
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        // RFC 6749 section 2.3.1: both halves form-encoded before the base64.
        let resp = self
            .http
            .post(self.url("/token"))
            .basic_auth(query_escape(client_id), Some(query_escape(client_secret)))
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("client_credentials token request: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "client_credentials token request for {client_id} / {resource}: {status} {text}"
        );
        let body: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("token response is not JSON ({e}): {text}"));
        let token = body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {text}"));
        assert_eq!(
            token.split('.').count(),
            3,
            "the access token for {resource} is not a JWT: {text}"
        );
        token.to_string()
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> String {
        let resp = self
            .http
            .request(method, self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("IdP admin request {path}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "IdP admin request {path}: {status} {body}"
        );
        body
    }

    /// Kills the IdP now (to test an unreachable provider).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The header and payload of a compact JWT, decoded but not verified.
pub fn jwt_parts(token: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine;
    let part = |i: usize| -> serde_json::Value {
        let seg = token
            .split('.')
            .nth(i)
            .unwrap_or_else(|| panic!("not a JWT: {token}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seg)
            .unwrap_or_else(|e| panic!("JWT segment {i} is not base64url ({e}): {token}"));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("JWT segment {i} is not JSON ({e}): {token}"))
    };
    (part(0), part(1))
}

fn line_matches(line: &str, event: &str, fields: &[(&str, &str)]) -> bool {
    let mut words = line.split_whitespace();
    if words.next() != Some(event) {
        return false;
    }
    let words: Vec<&str> = words.collect();
    fields
        .iter()
        .all(|(k, v)| words.iter().any(|w| w.split_once('=') == Some((k, v))))
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTML forms
// ---------------------------------------------------------------------------------------------

/// A `<form>` as a browser would submit it: resolved later against the page URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlForm {
    /// The `action` attribute as written (empty: the page itself).
    pub action: String,
    /// `GET` or `POST`.
    pub method: String,
    /// Successful controls in document order: inputs (checkboxes and radios only when
    /// checked) and the first named submit button.
    pub fields: Vec<(String, String)>,
}

impl HtmlForm {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_field(&self, name: &str) -> bool {
        self.field(name).is_some()
    }

    /// Sets `name` to `value`, replacing an existing value or appending the field.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value.to_string(),
            None => self.fields.push((name.to_string(), value.to_string())),
        }
    }
}

/// Every `<form>` in `html`, in document order.
pub fn parse_forms(html: &str) -> Vec<HtmlForm> {
    let lower = html.to_ascii_lowercase();
    let mut forms = Vec::new();
    let mut at = 0;
    while let Some(start) = find_tag(&lower, "form", at) {
        let Some(open_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let body_end = lower[open_end..]
            .find("</form")
            .map_or(html.len(), |i| open_end + i);
        let attrs = parse_attrs(&html[start + 5..open_end]);
        let mut form = HtmlForm {
            action: attr(&attrs, "action").unwrap_or_default(),
            method: attr(&attrs, "method")
                .unwrap_or_else(|| "GET".to_string())
                .to_ascii_uppercase(),
            fields: Vec::new(),
        };
        let inner = &html[open_end + 1..body_end];
        let inner_lower = &lower[open_end + 1..body_end];
        let mut submit_taken = false;
        let mut pos = 0;
        loop {
            let input = find_tag(inner_lower, "input", pos);
            let button = find_tag(inner_lower, "button", pos);
            let (tag_start, is_button) = match (input, button) {
                (Some(i), Some(b)) if b < i => (b, true),
                (Some(i), _) => (i, false),
                (None, Some(b)) => (b, true),
                (None, None) => break,
            };
            let name_len = if is_button { 7 } else { 6 };
            let Some(tag_end) = inner_lower[tag_start..].find('>').map(|i| tag_start + i) else {
                break;
            };
            let attrs = parse_attrs(&inner[tag_start + name_len..tag_end]);
            pos = tag_end + 1;
            let Some(name) = attr(&attrs, "name") else {
                continue;
            };
            let value = attr(&attrs, "value").unwrap_or_default();
            let kind = attr(&attrs, "type")
                .unwrap_or_else(|| if is_button { "submit" } else { "text" }.to_string())
                .to_ascii_lowercase();
            match kind.as_str() {
                "submit" | "image" => {
                    if !submit_taken {
                        submit_taken = true;
                        form.fields.push((name, value));
                    }
                }
                "button" | "reset" | "file" => {}
                "checkbox" | "radio" => {
                    if attrs.iter().any(|(n, _)| n == "checked") {
                        let value = if value.is_empty() {
                            "on".to_string()
                        } else {
                            value
                        };
                        form.fields.push((name, value));
                    }
                }
                _ => form.fields.push((name, value)),
            }
        }
        forms.push(form);
        at = body_end.max(open_end + 1);
    }
    forms
}

/// Index of the next `<tag` (followed by whitespace, `/` or `>`) at or after `from`.
fn find_tag(lower: &str, tag: &str, from: usize) -> Option<usize> {
    let needle = format!("<{tag}");
    let mut at = from;
    while let Some(i) = lower.get(at..)?.find(&needle) {
        let start = at + i;
        let next = lower.as_bytes().get(start + needle.len()).copied();
        if matches!(next, Some(b' ' | b'\t' | b'\n' | b'\r' | b'/' | b'>')) {
            return Some(start);
        }
        at = start + needle.len();
    }
    None
}

/// Attributes of one tag (the text between its name and `>`): lowercase names, decoded values.
fn parse_attrs(s: &str) -> Vec<(String, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        if i == name_start {
            i += 1;
            continue;
        }
        let name = s[name_start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let quote = b[i];
                let start = i + 1;
                let end = s[start..]
                    .bytes()
                    .position(|c| c == quote)
                    .map_or(s.len(), |p| start + p);
                i = (end + 1).min(b.len());
                &s[start..end]
            } else {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                &s[start..i]
            };
            out.push((name, decode_entities(value)));
        } else {
            out.push((name, String::new()));
        }
    }
    out
}

fn attr(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Decodes the character references found in attribute values.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let num = entity.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Browser
// ---------------------------------------------------------------------------------------------

/// One response, after any redirects the browser followed.
#[derive(Debug, Clone)]
pub struct Page {
    /// The URL this response came from.
    pub url: reqwest::Url,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Every URL requested to get here, the first one included.
    pub chain: Vec<String>,
    /// Set when following stopped because the next `Location` started with the stop prefix:
    /// that `Location`, resolved (e.g. the redirect URI with `code` and `state`).
    pub stopped_at: Option<reqwest::Url>,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    pub fn forms(&self) -> Vec<HtmlForm> {
        parse_forms(&self.body)
    }

    /// Whether this is a login form (it has a `password` field).
    pub fn has_login_form(&self) -> bool {
        self.forms().iter().any(|f| f.has_field("password"))
    }

    /// A query parameter of [`Page::stopped_at`], or else of [`Page::url`].
    pub fn query_param(&self, name: &str) -> Option<String> {
        let url = self.stopped_at.as_ref().unwrap_or(&self.url);
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

#[derive(Debug, Clone)]
struct Cookie {
    name: String,
    value: String,
    domain: String,
    host_only: bool,
    path: String,
    secure: bool,
    expires: Option<SystemTime>,
}

/// A browser without JavaScript: a cookie jar (domain, path, expiry and `Secure` honoured;
/// `SameSite` ignored; `Secure` cookies also sent to loopback over plain HTTP, as browsers do),
/// redirects followed by hand, `Accept: text/html` on every request, and HTML forms posted with
/// an `Origin` header. Safe to share between concurrent requests.
pub struct Browser {
    client: reqwest::Client,
    jar: Mutex<Vec<Cookie>>,
    headers: Mutex<Vec<(String, String)>>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

/// The most redirects one navigation follows.
const MAX_REDIRECTS: usize = 20;

impl Browser {
    pub fn new() -> Browser {
        Browser::with_hosts(&[])
    }

    /// A browser that resolves each `host` to `addr` (the URL's port is still the one used),
    /// for tests that route by host name.
    pub fn with_hosts(hosts: &[(&str, SocketAddr)]) -> Browser {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        for (host, addr) in hosts {
            builder = builder.resolve(host, *addr);
        }
        Browser {
            client: builder
                .build()
                .expect("building the test browser's HTTP client"),
            jar: Mutex::new(Vec::new()),
            headers: Mutex::new(vec![(
                "accept".to_string(),
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".to_string(),
            )]),
        }
    }

    /// Sends `name: value` on every later request (replacing a previous value, `Accept` too).
    pub fn set_header(&self, name: &str, value: &str) {
        let mut headers = self.headers.lock().expect("browser headers");
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// GET `url`, following redirects.
    pub async fn get(&self, url: &str) -> Page {
        self.navigate("GET", url, None, None, None).await
    }

    /// GET `url`, following redirects until one points at a URL starting with `stop`.
    pub async fn get_until(&self, url: &str, stop: &str) -> Page {
        self.navigate("GET", url, None, None, Some(stop)).await
    }

    /// GET `url` without following a redirect.
    pub async fn get_once(&self, url: &str) -> Page {
        self.send("GET", &parse_url(url), None, None, vec![url.to_string()])
            .await
    }

    /// POST `fields` form-encoded to `url`, following redirects.
    pub async fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> Page {
        let fields = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.navigate("POST", url, Some(fields), None, None).await
    }

    /// Submits the first form on `page` with `fields` set (other fields keep the values the
    /// page gave them, hidden ones included), following redirects.
    pub async fn submit(&self, page: &Page, fields: &[(&str, &str)]) -> Page {
        self.submit_until(page, fields, None).await
    }

    /// As [`Browser::submit`], stopping at a redirect to a URL starting with `stop`.
    pub async fn submit_until(
        &self,
        page: &Page,
        fields: &[(&str, &str)],
        stop: Option<&str>,
    ) -> Page {
        let form = page.forms().into_iter().next().unwrap_or_else(|| {
            panic!(
                "no form on {} (status {}):\n{}",
                page.url,
                page.status,
                snippet(&page.body)
            )
        });
        self.submit_form(page, form, fields, stop).await
    }

    /// Submits `form` (from `page`) with `fields` set, following redirects.
    pub async fn submit_form(
        &self,
        page: &Page,
        mut form: HtmlForm,
        fields: &[(&str, &str)],
        stop: Option<&str>,
    ) -> Page {
        for (k, v) in fields {
            form.set(k, v);
        }
        let action = if form.action.is_empty() {
            page.url.clone()
        } else {
            page.url
                .join(&form.action)
                .unwrap_or_else(|e| panic!("form action {:?}: {e}", form.action))
        };
        let origin = page.url.origin().ascii_serialization();
        if form.method == "POST" {
            self.navigate(
                "POST",
                action.as_str(),
                Some(form.fields),
                Some(origin),
                stop,
            )
            .await
        } else {
            let mut url = action;
            url.query_pairs_mut().clear().extend_pairs(&form.fields);
            self.navigate("GET", url.as_str(), None, None, stop).await
        }
    }

    /// Logs in from `start_url` (e.g. a protected page behind Portcullis, or its
    /// `/.portcullis/start`): follows redirects to the IdP, posts its login form as
    /// `username` / `password` (skipped if the IdP session is still alive), passes any consent
    /// form, and returns the page where the redirects end.
    pub async fn login(&self, start_url: &str, username: &str, password: &str) -> Page {
        let page = self.get(start_url).await;
        self.complete_login(page, username, password).await
    }

    /// Continues a login from `page` (the IdP's login form, or a page after it).
    pub async fn complete_login(&self, page: Page, username: &str, password: &str) -> Page {
        self.finish_login(page, &[("username", username), ("password", password)])
            .await
    }

    /// As [`Browser::complete_login`], with `otp` in the login form's one-time-code field: the
    /// right code ([`OTP`] unless the user has their own) makes a step-up login (`acr`
    /// [`STEP_UP_ACR`], `amr` `pwd otp mfa`); a wrong one gets the form again with 401.
    pub async fn complete_login_with_otp(
        &self,
        page: Page,
        username: &str,
        password: &str,
        otp: &str,
    ) -> Page {
        self.finish_login(
            page,
            &[("username", username), ("password", password), ("otp", otp)],
        )
        .await
    }

    async fn finish_login(&self, mut page: Page, fields: &[(&str, &str)]) -> Page {
        if page.has_login_form() {
            page = post_login_form(self, &page, fields).await;
        }
        // Consent or other interaction forms of the IdP.
        for _ in 0..3 {
            let interaction = page
                .forms()
                .into_iter()
                .find(|f| f.action.contains("/interaction/") && !f.has_field("password"));
            match interaction {
                Some(form) => page = self.submit_form(&page, form, &[], None).await,
                None => break,
            }
        }
        page
    }

    /// The value of cookie `name` sent to `url`, if any.
    pub fn cookie_for(&self, url: &str, name: &str) -> Option<String> {
        let url = parse_url(url);
        self.matching_cookies(&url)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Whether the jar holds a live cookie `name` for any site.
    pub fn has_cookie(&self, name: &str) -> bool {
        let now = SystemTime::now();
        self.jar
            .lock()
            .expect("cookie jar")
            .iter()
            .any(|c| c.name == name && c.expires.is_none_or(|e| e > now))
    }

    /// Stores a cookie as if `url` had answered `Set-Cookie: set_cookie` (to plant forged or
    /// tampered cookies).
    pub fn set_cookie(&self, url: &str, set_cookie: &str) {
        self.store_cookie(&parse_url(url), set_cookie);
    }

    /// Forgets cookie `name` everywhere.
    pub fn remove_cookie(&self, name: &str) {
        self.jar
            .lock()
            .expect("cookie jar")
            .retain(|c| c.name != name);
    }

    pub fn clear_cookies(&self) {
        self.jar.lock().expect("cookie jar").clear();
    }

    async fn navigate(
        &self,
        method: &str,
        url: &str,
        mut form: Option<Vec<(String, String)>>,
        mut origin: Option<String>,
        stop: Option<&str>,
    ) -> Page {
        let mut method = method.to_string();
        let mut url = parse_url(url);
        let mut chain = vec![url.to_string()];
        for _ in 0..MAX_REDIRECTS {
            let page = self
                .send(&method, &url, form.clone(), origin.clone(), chain.clone())
                .await;
            let Some(location) = page.location().filter(|_| is_redirect(page.status)) else {
                return page;
            };
            let next = page
                .url
                .join(location)
                .unwrap_or_else(|e| panic!("bad Location {location:?} from {}: {e}", page.url));
            if stop.is_some_and(|s| next.as_str().starts_with(s)) {
                return Page {
                    stopped_at: Some(next),
                    ..page
                };
            }
            if !matches!(page.status, 307 | 308) {
                method = "GET".to_string();
                form = None;
                origin = None;
            }
            chain.push(next.to_string());
            url = next;
        }
        panic!("more than {MAX_REDIRECTS} redirects: {chain:#?}");
    }

    async fn send(
        &self,
        method: &str,
        url: &reqwest::Url,
        form: Option<Vec<(String, String)>>,
        origin: Option<String>,
        chain: Vec<String>,
    ) -> Page {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut req = self.client.request(method.clone(), url.clone());
        for (k, v) in self.headers.lock().expect("browser headers").iter() {
            req = req.header(k.as_str(), v.as_str());
        }
        let cookies = self.matching_cookies(url);
        if !cookies.is_empty() {
            let header: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
            req = req.header("cookie", header.join("; "));
        }
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        if let Some(fields) = &form {
            req = req.form(fields);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        for (_, v) in headers.iter().filter(|(n, _)| n == "set-cookie") {
            self.store_cookie(url, v);
        }
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the body of {method} {url}: {e}"));
        Page {
            url: url.clone(),
            status,
            headers,
            body,
            chain,
            stopped_at: None,
        }
    }

    fn matching_cookies(&self, url: &reqwest::Url) -> Vec<(String, String)> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let path = url.path();
        let secure_ok = url.scheme() == "https" || is_loopback(&host);
        let now = SystemTime::now();
        let mut jar = self.jar.lock().expect("cookie jar");
        jar.retain(|c| c.expires.is_none_or(|e| e > now));
        let mut found: Vec<&Cookie> = jar
            .iter()
            .filter(|c| {
                let domain_ok = if c.host_only {
                    c.domain == host
                } else {
                    domain_matches(&host, &c.domain)
                };
                domain_ok && path_matches(path, &c.path) && (!c.secure || secure_ok)
            })
            .collect();
        // Longer paths first, as browsers send them.
        found.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        found
            .into_iter()
            .map(|c| (c.name.clone(), c.value.clone()))
            .collect()
    }

    fn store_cookie(&self, url: &reqwest::Url, header: &str) {
        let mut parts = header.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let mut cookie = Cookie {
            name: name.trim().to_string(),
            value: value.trim().trim_matches('"').to_string(),
            domain: host.clone(),
            host_only: true,
            path: default_path(url.path()),
            secure: false,
            expires: None,
        };
        if cookie.name.is_empty() {
            return;
        }
        let mut max_age = None;
        for attr in parts {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "domain" if !v.is_empty() => {
                    let d = v.trim_start_matches('.').to_ascii_lowercase();
                    if !domain_matches(&host, &d) {
                        return; // a site may not set cookies for another
                    }
                    cookie.domain = d;
                    cookie.host_only = false;
                }
                "path" if v.starts_with('/') => cookie.path = v.to_string(),
                "secure" => cookie.secure = true,
                "max-age" => max_age = v.parse::<i64>().ok(),
                "expires" => {
                    if let Some(t) = parse_http_date(v) {
                        cookie.expires = Some(unix_to_system(t));
                    }
                }
                _ => {}
            }
        }
        if let Some(secs) = max_age {
            cookie.expires = Some(if secs <= 0 {
                UNIX_EPOCH
            } else {
                SystemTime::now() + Duration::from_secs(secs as u64)
            });
        }
        let mut jar = self.jar.lock().expect("cookie jar");
        jar.retain(|c| {
            !(c.name == cookie.name && c.domain == cookie.domain && c.path == cookie.path)
        });
        if cookie.expires.is_none_or(|e| e > SystemTime::now()) {
            jar.push(cookie);
        }
    }
}

/// Fills the IdP's login form on `login_page` (the form with a `password` field, or else the
/// first form) with `username` and `password`, keeps its hidden fields, posts it to its
/// `action`, and follows the redirects that come back.
pub async fn login_form_post(
    browser: &Browser,
    login_page: &Page,
    username: &str,
    password: &str,
) -> Page {
    post_login_form(
        browser,
        login_page,
        &[("username", username), ("password", password)],
    )
    .await
}

async fn post_login_form(browser: &Browser, login_page: &Page, fields: &[(&str, &str)]) -> Page {
    let forms = login_page.forms();
    let form = forms
        .iter()
        .find(|f| f.has_field("password"))
        .or_else(|| forms.first())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no login form on {} (status {}):\n{}",
                login_page.url,
                login_page.status,
                snippet(&login_page.body)
            )
        });
    browser.submit_form(login_page, form, fields, None).await
}

fn parse_url(url: &str) -> reqwest::Url {
    reqwest::Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"))
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.starts_with("127.")
        || host == "[::1]"
}

fn domain_matches(host: &str, domain: &str) -> bool {
    host == domain
        || (host.ends_with(domain)
            && host.as_bytes().get(host.len() - domain.len() - 1) == Some(&b'.'))
}

fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request.as_bytes().get(cookie.len()) == Some(&b'/')))
}

/// RFC 6265 default-path: the request path up to, not including, its last `/`.
fn default_path(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

/// Seconds since the epoch of an HTTP date (`Thu, 01 Jan 1970 00:00:00 GMT`, also with `-`
/// between the date parts).
fn parse_http_date(s: &str) -> Option<i64> {
    let cleaned: String = s
        .chars()
        .map(|c| if matches!(c, ',' | '-' | ':') { ' ' } else { c })
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    if words.first()?.chars().all(|c| c.is_ascii_alphabetic()) {
        words.remove(0); // weekday
    }
    let day: i64 = words.first()?.parse().ok()?;
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| {
        words
            .get(1)
            .is_some_and(|w| w.to_ascii_lowercase().starts_with(m))
    })? as i64
        + 1;
    let mut year: i64 = words.get(2)?.parse().ok()?;
    if year < 100 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    let h: i64 = words.get(3)?.parse().ok()?;
    let m: i64 = words.get(4)?.parse().ok()?;
    let sec: i64 = words.get(5)?.parse().ok()?;
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs <= 0 {
        UNIX_EPOCH
    } else {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }
}

fn snippet(body: &str) -> &str {
    let mut end = body.len().min(600);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}
