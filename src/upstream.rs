//! Where a route sends its requests: a real HTTP(S) server, or one of the built-in answers.

use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long a DNS answer for an upstream host name is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum Upstream {
    Http(HttpUpstream),
    /// `static://CODE`: that status, an empty body.
    Static(http::StatusCode),
    /// `echo://`: a description of the request as an upstream would have received it.
    Echo,
    /// No `upstream:`: the route only answers forward-auth checks; proxied requests get 404.
    None,
}

impl Upstream {
    /// Parses `http(s)://host[:port]`, `static://CODE` or `echo://`.
    pub fn parse(s: &str, timeouts: &UpstreamTimeouts) -> Result<Self, String> {
        if s == "echo://" {
            return Ok(Upstream::Echo);
        }
        if let Some(code) = s.strip_prefix("static://") {
            let status = code
                .parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c))
                .and_then(|c| http::StatusCode::from_u16(c).ok())
                .ok_or_else(|| format!("invalid static upstream {s:?}: expected static://CODE with CODE from 200 to 599"))?;
            return Ok(Upstream::Static(status));
        }
        // Error messages are logged (a refused reload): a URL with user info is not echoed.
        let shown = if s.contains('@') {
            crate::secret::redact_url(s)
        } else {
            format!("{s:?}")
        };
        let url = url::Url::parse(s).map_err(|e| format!("invalid upstream URL {shown}: {e}"))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "unsupported upstream scheme {other:?} in {s:?}: use http://, https://, static://CODE or echo://"
                ))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "upstream URL {shown} must not carry credentials: use headers.add_file"
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "upstream URL {s:?} must not have a path, query or fragment: requests keep their own path"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("upstream URL {s:?} has no host")),
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let fixed = host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Ok(Upstream::Http(HttpUpstream {
            url: s.to_string(),
            host,
            port,
            tls,
            timeouts: timeouts.clone(),
            fixed,
            resolved: RwLock::new(None),
        }))
    }

    /// Short text for logs: the URL, never anything secret.
    pub fn describe(&self) -> &str {
        match self {
            Upstream::Http(h) => &h.url,
            Upstream::Static(_) => "static",
            Upstream::Echo => "echo://",
            Upstream::None => "-",
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub read: Duration,
    pub idle: Duration,
}

#[derive(Debug)]
pub struct HttpUpstream {
    pub url: String,
    host: String,
    port: u16,
    tls: bool,
    timeouts: UpstreamTimeouts,
    /// Set when the host is an IP literal: no resolution at all.
    fixed: Option<SocketAddr>,
    /// Last DNS answer for a host name, reused for [`DNS_TTL`].
    resolved: RwLock<Option<(SocketAddr, Instant)>>,
}

impl HttpUpstream {
    /// The address to connect to. Host names are resolved here, not at load, so a name that
    /// does not resolve yet (a container still starting) is a 502 for now rather than a
    /// refused config.
    pub async fn addr(&self) -> std::io::Result<SocketAddr> {
        match self.fixed {
            Some(a) => Ok(a),
            None => self.resolve().await,
        }
    }

    /// Whether to speak TLS to the upstream.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The name to send as SNI and check the certificate against (TLS upstreams).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn timeouts(&self) -> &UpstreamTimeouts {
        &self.timeouts
    }

    async fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Ok(guard) = self.resolved.read() {
            if let Some((addr, at)) = *guard {
                if at.elapsed() < DNS_TTL {
                    return Ok(addr);
                }
            }
        }
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{} has no address", self.host)))?;
        if let Ok(mut guard) = self.resolved.write() {
            *guard = Some((addr, Instant::now()));
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> UpstreamTimeouts {
        UpstreamTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        }
    }

    #[test]
    fn parses_each_kind() {
        assert!(matches!(
            Upstream::parse("echo://", &t()),
            Ok(Upstream::Echo)
        ));
        assert!(
            matches!(Upstream::parse("static://204", &t()), Ok(Upstream::Static(s)) if s == 204)
        );
        assert!(
            matches!(Upstream::parse("http://127.0.0.1:3000", &t()), Ok(Upstream::Http(h)) if h.fixed.is_some())
        );
        assert!(
            matches!(Upstream::parse("https://app.internal", &t()), Ok(Upstream::Http(h)) if h.port == 443 && h.fixed.is_none())
        );
    }

    #[test]
    fn credentials_in_a_refused_url_are_not_echoed() {
        for bad in [
            "http://user:s3cret@host",
            "http://s3cret@host",
            "http://user:s3cret@host:bad",
        ] {
            let e = Upstream::parse(bad, &t()).unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn refuses_bad_upstreams() {
        for bad in [
            "ftp://x",
            "static://99",
            "static://abc",
            "static://600",
            "echo://x",
            "http://",
            "http://u:p@host",
            "http://host/base",
            "http://host/?q",
            "127.0.0.1:3000",
        ] {
            assert!(
                Upstream::parse(bad, &t()).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
