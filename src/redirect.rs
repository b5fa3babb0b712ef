//! Validation of return URLs (`rd=`), the classic open-redirect hole of login proxies. A
//! return URL is either a path on the host the request came to, or an absolute http(s) URL
//! whose host Portcullis serves or the operator allowed. Everything else is refused.

use crate::routes::HostPattern;

/// The longest return URL accepted.
const MAX_LEN: usize = 2048;

/// Hosts a login may return to: the route hosts plus `server.allowed_redirect_domains`.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    /// Exact hosts (route hosts, the public URL's host).
    pub exact: Vec<String>,
    /// Suffixes with a leading dot (`.example.com`), from `*.` routes and allowed domains.
    pub suffixes: Vec<String>,
}

impl RedirectPolicy {
    pub fn allow_pattern(&mut self, p: &HostPattern) {
        match p {
            HostPattern::Exact(h) => self.exact.push(h.clone()),
            HostPattern::Wildcard(s) => self.suffixes.push(s.clone()),
            HostPattern::Any => {}
        }
    }

    /// `example.com` allows exactly that host; `.example.com` allows every subdomain (and
    /// example.com itself), as oauth2-proxy's whitelist domains do.
    pub fn allow_domain(&mut self, d: &str) {
        let d = d.trim().to_ascii_lowercase();
        match d.strip_prefix('.') {
            Some(bare) => {
                self.exact.push(bare.to_string());
                self.suffixes.push(d);
            }
            None => self.exact.push(d),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.exact.iter().any(|h| h == host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }

    /// Checks `rd` and returns it as an absolute URL. `here` is the scheme and authority
    /// (`https://app.example.com:8443`) of the request, against which a path is resolved and
    /// whose port an absolute URL may name.
    pub fn check(&self, rd: &str, here: &url::Url) -> Option<url::Url> {
        if rd.is_empty() || rd.len() > MAX_LEN {
            return None;
        }
        // Control characters, whitespace and backslashes: browsers strip or flip them, so
        // `/\evil.com` or `/\t/evil.com` can become `//evil.com`.
        if rd
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return None;
        }
        if rd.starts_with('/') {
            if rd.starts_with("//") {
                return None;
            }
            let url = here.join(rd).ok()?;
            // The join must not have moved us off the host (it cannot for a single-slash path,
            // but the check costs nothing).
            return (url.host_str() == here.host_str() && url.port() == here.port()).then_some(url);
        }
        let url = url::Url::parse(rd).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => format!("[{ip}]"),
        };
        if !self.host_allowed(&host) && Some(host.as_str()) != here.host_str() {
            return None;
        }
        // An explicit port must be the one this request came in on: another port on an
        // allowed host can be another, less trusted, service.
        if let Some(port) = url.port() {
            if here.port_or_known_default() != Some(port) {
                return None;
            }
        }
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        let mut p = RedirectPolicy::default();
        p.allow_pattern(&HostPattern::parse("app.example.com").unwrap());
        p.allow_pattern(&HostPattern::parse("*.apps.example.com").unwrap());
        p.allow_domain(".corp.example");
        p
    }

    fn here() -> url::Url {
        url::Url::parse("https://app.example.com").unwrap()
    }

    #[test]
    fn good_return_urls_pass() {
        let p = policy();
        for (rd, want) in [
            ("/", "https://app.example.com/"),
            (
                "/dashboard?tab=1#x",
                "https://app.example.com/dashboard?tab=1#x",
            ),
            ("https://app.example.com/x", "https://app.example.com/x"),
            ("https://a.apps.example.com/", "https://a.apps.example.com/"),
            ("https://wiki.corp.example/p", "https://wiki.corp.example/p"),
            ("https://corp.example/", "https://corp.example/"),
            ("https://APP.example.com:443/", "https://app.example.com/"),
        ] {
            assert_eq!(
                p.check(rd, &here()).map(|u| u.to_string()).as_deref(),
                Some(want),
                "{rd}"
            );
        }
    }

    /// None of these may lead off-site.
    #[test]
    fn hostile_return_urls_are_refused() {
        let p = policy();
        let hostile = [
            "//evil.com",
            "//evil.com/",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "/\t/evil.com",
            "/\n/evil.com",
            "/ /evil.com",
            "https://evil.com",
            "http://evil.com/",
            "https://app.example.com@evil.com",
            "https://app.example.com:pw@evil.com/",
            "https://evil.com#@app.example.com",
            "https://evil.com?@app.example.com",
            "https://app.example.com.evil.com/",
            "https://evilapp.example.com/",
            "https://apps.example.com.evil.com/",
            "https://xcorp.example/",
            "https://app.example.com:8443/",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "ftp://app.example.com/",
            "https:evil.com",
            "https:/evil.com",
            "%2F%2Fevil.com",
            "evil.com",
            "app.example.com",
            "https://аpp.example.com/",
            "https://app.example.com\u{0}.evil.com/",
            "https://evil.com\\@app.example.com/",
            "",
        ];
        for rd in hostile {
            assert_eq!(p.check(rd, &here()), None, "{rd:?} was accepted");
        }
        assert_eq!(p.check(&format!("/{}", "a".repeat(3000)), &here()), None);
    }
}
