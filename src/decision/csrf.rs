//! Cross-site request checks (CSRF): a cookie rides along on a request another site makes the
//! browser send; `Sec-Fetch-Site` and `Origin` tell such requests apart, with no token to put
//! into the app's forms.

use super::Presented;
use crate::request::RequestView;

/// Why a cookie-authenticated request looks cross-site, if it does (SPEC §5): an unsafe
/// method (or a WebSocket handshake) with `Sec-Fetch-Site: cross-site`, or with an `Origin`
/// other than the route's own.
pub(super) fn cross_site(view: &RequestView, presented: &Presented<'_>) -> Option<&'static str> {
    let safe = matches!(
        view.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    if safe && !view.websocket {
        return None;
    }
    if presented
        .fetch_site
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site"))
    {
        return Some("cross-site request (Sec-Fetch-Site: cross-site)");
    }
    match presented.origin {
        Some(origin) if !same_origin(origin, view) => Some("cross-origin request (Origin)"),
        _ => None,
    }
}

/// Whether an `Origin` value names the origin the request was addressed to (`view.authority`:
/// through a trusted front proxy, the one it says).
fn same_origin(origin: &str, view: &RequestView) -> bool {
    let scheme = if view.tls { "https" } else { "http" };
    let Some(rest) = origin
        .trim()
        .get(..scheme.len() + 3)
        .filter(|p| p.eq_ignore_ascii_case(&format!("{scheme}://")))
        .map(|_| &origin.trim()[scheme.len() + 3..])
    else {
        return false;
    };
    let default_port = if view.tls { "443" } else { "80" };
    let port_of = |authority: &str| -> Option<String> {
        let after_host = match authority.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map(|(_, p)| p)?,
            None => authority.rsplit_once(':').map_or("", |(_, p)| p),
        };
        let port = after_host.trim_start_matches(':');
        Some(if port.is_empty() { default_port } else { port }.to_string())
    };
    let (Ok(host), Ok(own)) = (
        crate::request::parse_host(rest),
        crate::request::parse_host(&view.authority),
    ) else {
        return false;
    };
    host == own && port_of(rest) == port_of(&view.authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(method: http::Method, tls: bool, authority: &str) -> RequestView {
        RequestView {
            method,
            tls,
            host: crate::request::parse_host(authority).unwrap().into(),
            forwarded_host: None,
            authority: authority.into(),
            path: "/".into(),
            query: None,
            client_ip: None,
            wants_html: false,
            websocket: false,
        }
    }

    #[test]
    fn origins() {
        let v = view(http::Method::POST, false, "app.example.com:8080");
        assert!(same_origin("http://app.example.com:8080", &v));
        assert!(same_origin("HTTP://App.Example.com:8080", &v));
        assert!(!same_origin("http://app.example.com", &v));
        assert!(!same_origin("https://app.example.com:8080", &v));
        assert!(!same_origin("http://evil.com:8080", &v));
        assert!(!same_origin("http://app.example.com.evil.com:8080", &v));
        assert!(!same_origin("null", &v));
        assert!(!same_origin("", &v));
        let v = view(http::Method::POST, true, "app.example.com");
        assert!(same_origin("https://app.example.com", &v));
        assert!(same_origin("https://app.example.com:443", &v));
        assert!(!same_origin("http://app.example.com", &v));
    }

    #[test]
    fn csrf_signals() {
        let post = view(http::Method::POST, false, "app:80");
        let p = |origin: Option<&'static str>, site: Option<&'static str>| Presented {
            origin,
            fetch_site: site,
            ..Presented::default()
        };
        assert!(cross_site(&post, &p(None, None)).is_none());
        assert!(cross_site(&post, &p(Some("http://app"), Some("same-origin"))).is_none());
        assert!(cross_site(&post, &p(None, Some("cross-site"))).is_some());
        assert!(cross_site(&post, &p(Some("http://evil"), None)).is_some());
        assert!(cross_site(&post, &p(Some("null"), None)).is_some());
        let get = view(http::Method::GET, false, "app");
        assert!(cross_site(&get, &p(Some("http://evil"), Some("cross-site"))).is_none());
        let mut ws = get.clone();
        ws.websocket = true;
        assert!(cross_site(&ws, &p(Some("http://evil"), None)).is_some());
    }
}
