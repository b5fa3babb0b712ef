//! Validation of return URLs (`rd=`), the classic open-redirect hole of login proxies. A
//! return URL is either a path on the host the request came to, or an absolute http(s) URL
//! whose host Portcullis serves or the operator allowed. Everything else is refused.

use crate::routes::HostPattern;

/// The longest return URL accepted.
const MAX_LEN: usize = 2048;

/// Where a login may return to: the route hosts, the public URL, and
/// `server.allowed_redirect_domains`, each with the ports it allows.
#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    allowed: Vec<Allowed>,
}

/// One allowed host (or domain) and the ports that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    host: HostMatch,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `.example.com`: every subdomain, and `example.com` itself.
    Domain(String),
    /// `*.example.com` route hosts: subdomains only.
    Subdomains(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        let under = |suffix: &str| host.len() > suffix.len() && host.ends_with(suffix);
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Domain(d) => under(d) || host == &d[1..],
            HostMatch::Subdomains(d) => under(d),
        }
    }
}

/// The ports a return URL to an allowed host may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// None named: a URL without a port, or with the port this request came in on (another
    /// port on an allowed host can be another, less trusted, service).
    Request,
    /// `host:*`: any port.
    Any,
    /// `host:8443`: that port.
    Exact(u16),
}

impl RedirectPolicy {
    /// A route host (`app.example.com` or `*.example.com`); the host-less pattern adds nothing.
    pub fn allow_pattern(&mut self, p: &HostPattern) {
        let host = match p {
            HostPattern::Exact(h) => HostMatch::Exact(h.clone()),
            HostPattern::Wildcard(s) => HostMatch::Subdomains(s.clone()),
            HostPattern::Any => return,
        };
        self.allowed.push(Allowed {
            host,
            port: PortRule::Request,
        });
    }

    /// The public URL's origin, with its own port.
    pub fn allow_origin(&mut self, url: &url::Url) {
        if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
            for rule in [PortRule::Request, PortRule::Exact(port)] {
                self.allowed.push(Allowed {
                    host: HostMatch::Exact(host.to_ascii_lowercase()),
                    port: rule,
                });
            }
        }
    }

    /// An `allowed_redirect_domains` entry: `example.com` allows exactly that host,
    /// `.example.com` every subdomain and example.com itself (as oauth2-proxy's whitelist
    /// domains do); either may name a port (`localhost:8443`) or any port (`.example.com:*`).
    pub fn allow_domain(&mut self, entry: &str) -> Result<(), String> {
        let entry = entry.trim().to_ascii_lowercase();
        let (name, port) = match entry.rsplit_once(':') {
            Some((name, "*")) => (name, PortRule::Any),
            Some((name, digits))
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let port = digits
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("invalid port in {entry:?}"))?;
                (name, PortRule::Exact(port))
            }
            _ => (entry.as_str(), PortRule::Request),
        };
        let bare = name.strip_prefix('.').unwrap_or(name);
        if crate::request::parse_host(bare).ok().as_deref() != Some(bare) {
            return Err(format!(
                "invalid domain {entry:?}: expected a host such as example.com or .example.com, optionally with :PORT or :*"
            ));
        }
        let host = if name.starts_with('.') {
            HostMatch::Domain(name.to_string())
        } else {
            HostMatch::Exact(name.to_string())
        };
        self.allowed.push(Allowed { host, port });
        Ok(())
    }

    /// Checks `rd` and returns it as an absolute URL. `here` is the scheme and authority
    /// (`https://app.example.com:8443`) of the request, against which a path is resolved and
    /// whose host and port an absolute URL may name.
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
        let port_ok = |rule: PortRule| match (rule, url.port()) {
            (PortRule::Request, None) | (PortRule::Any, _) => true,
            (PortRule::Request, Some(p)) => here.port_or_known_default() == Some(p),
            (PortRule::Exact(p), _) => url.port_or_known_default() == Some(p),
        };
        let here_host = Some(host.as_str()) == here.host_str();
        let allowed = (here_host && port_ok(PortRule::Request))
            || self
                .allowed
                .iter()
                .any(|a| a.host.matches(&host) && port_ok(a.port));
        allowed.then_some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        let mut p = RedirectPolicy::default();
        p.allow_pattern(&HostPattern::parse("app.example.com").unwrap());
        p.allow_pattern(&HostPattern::parse("*.apps.example.com").unwrap());
        p.allow_domain(".corp.example").unwrap();
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

    #[test]
    fn ports_in_allowed_domains() {
        let mut p = RedirectPolicy::default();
        p.allow_domain("localhost:8443").unwrap();
        p.allow_domain(".example.com:*").unwrap();
        p.allow_origin(&url::Url::parse("http://auth.test:4180/").unwrap());
        let here = url::Url::parse("http://localhost:8080").unwrap();
        let ok = |rd: &str| p.check(rd, &here).is_some();
        assert!(ok("http://localhost:8443/x"));
        assert!(ok("http://localhost:8080/x"), "the request's own port");
        assert!(!ok("http://localhost:9000/x"));
        assert!(ok("http://localhost/x"), "no port named");
        assert!(!ok("http://other.test:8443/x"));
        assert!(ok("https://a.example.com:1234/"));
        assert!(ok("https://example.com/"));
        assert!(!ok("https://example.com.evil.test:1234/"));
        assert!(ok("http://auth.test:4180/"), "the public URL's own port");
        assert!(ok("http://auth.test/"), "no port named");
        assert!(!ok("http://auth.test:4181/"));
        // Without a port, another port than the request's stays refused.
        let mut q = RedirectPolicy::default();
        q.allow_domain("app.test").unwrap();
        assert!(q.check("http://app.test:9000/", &here).is_none());
        assert!(q.check("http://app.test/", &here).is_some());
        for bad in [
            "",
            ":8443",
            "a b",
            "host:0",
            "host:99999",
            "host:x",
            "*.example.com",
        ] {
            assert!(
                RedirectPolicy::default().allow_domain(bad).is_err(),
                "{bad:?}"
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
