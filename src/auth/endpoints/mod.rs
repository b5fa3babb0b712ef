//! `/.portcullis/*`: login start and OIDC callback ([`login`]), cross-domain session
//! hand-over ([`handover`]), logout and userinfo ([`logout`]). Each handler returns an
//! [`Answer`] that the front door writes; failures are [`Failure`]s, classified once.

mod failure;
mod handover;
mod local;
mod local_form;
mod login;
mod logout;

pub use local::MAX_FORM_BYTES;

pub use failure::Failure;

use super::Auth;
use crate::answer::Answer;
use base64::Engine;
use std::net::IpAddr;

/// What a handler needs to know about the request.
pub struct EndpointRequest<'a> {
    pub method: &'a http::Method,
    /// The part after `/.portcullis/`.
    pub endpoint: &'a str,
    pub query: Option<&'a str>,
    /// `scheme://host[:port]` of this request, as the client sees it.
    pub here: url::Url,
    pub cookie_header: Option<&'a str>,
    pub wants_html: bool,
    pub client_ip: Option<IpAddr>,
    /// The body of a `POST /.portcullis/login` (the login form's fields), at most
    /// [`MAX_FORM_BYTES`]; `None` elsewhere.
    pub body: Option<&'a [u8]>,
    /// `Origin` and `Sec-Fetch-Site`, for the login form's cross-site check.
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
}

impl EndpointRequest<'_> {
    pub(super) fn param(&self, name: &str) -> Option<String> {
        let q = self.query?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Every value of `name`, in order.
    pub(super) fn params(&self, name: &str) -> Vec<String> {
        let Some(q) = self.query else {
            return Vec::new();
        };
        url::form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    }
}

/// Answers `/.portcullis/<endpoint>`.
pub async fn handle(auth: &Auth, req: EndpointRequest<'_>) -> Answer {
    let get = *req.method == http::Method::GET || *req.method == http::Method::HEAD;
    let post = *req.method == http::Method::POST;
    match req.endpoint {
        "start" if get => login::start(auth, &req),
        "callback" if get => login::callback(auth, &req).await,
        "session" if get => handover::handover(auth, &req).await,
        "logout" if get || post => logout::logout(auth, &req).await,
        "userinfo" if get => logout::userinfo(auth, &req).await,
        // The login form exists only with a local provider.
        "login" if auth.config.local.is_empty() => Failure::NoSuchEndpoint.answer(req.wants_html),
        "login" if get || post => {
            // Boxed: the form's future is large, and the proxy's own is built around it.
            Box::pin(local::login(auth, &req)).await
        }
        "start" | "callback" | "session" | "logout" | "userinfo" | "login" => {
            Failure::MethodNotAllowed.answer(req.wants_html)
        }
        _ => Failure::NoSuchEndpoint.answer(req.wants_html),
    }
}

pub(super) fn now(auth: &Auth) -> u64 {
    auth.clock.now_secs()
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

pub(super) fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The URL that begins a login and comes back to `rd` (used for the 302 on protected routes).
/// Where a browser starts logging in; `step_up` asks the IdP for a fresh login with MFA.
/// The one place that decides it: `/.portcullis/start` for an OpenID provider, the login
/// form `/.portcullis/login` for a local one, both on the public URL.
pub fn login_url(auth: &Auth, rd: &str, provider: &str, step_up: bool) -> String {
    let mut url = auth.config.public_url.clone();
    if auth.local(provider).is_some() {
        url.set_path("/.portcullis/login");
    } else {
        url.set_path("/.portcullis/start");
    }
    url.query_pairs_mut()
        .clear()
        .append_pair("rd", rd)
        .append_pair("provider", provider);
    if step_up {
        url.query_pairs_mut().append_pair("step_up", "1");
    }
    url.to_string()
}
