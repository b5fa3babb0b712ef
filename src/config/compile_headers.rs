//! Header settings compiled to ready `HeaderName`/`HeaderValue` pairs: identity header
//! templates, security headers (merged route over global over built-in), and the headers a
//! route adds.

use super::compile::note;
use super::error::Problems;
use super::schema;
use crate::headers::SecurityHeaders;
use http::{HeaderName, HeaderValue};
use std::collections::BTreeMap;

/// Placeholders an identity header template may use.
const TEMPLATE_FIELDS: &[&str] = &["user", "email", "groups", "name", "sub", "sid"];

/// Headers that carry framing or routing and must never be set from config.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

pub(super) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("invalid header name {s:?}"))
}

pub(super) fn settable_header(s: &str) -> Result<HeaderName, String> {
    let name = header_name(s)?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "{s} is managed by Portcullis and cannot be set from config"
        ));
    }
    Ok(name)
}

fn header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s)
        .map_err(|_| "invalid header value (control characters or non-ASCII?)".to_string())
}

pub(super) fn identity_headers(
    map: &BTreeMap<String, String>,
    p: &mut Problems,
) -> Vec<(crate::headers::FieldName, String)> {
    let mut out = Vec::new();
    for (name, template) in map {
        let key = format!("headers.identity.{name}");
        let n = note(p, key.clone(), settable_header(name));
        let t = note(p, key, check_template(template));
        if let (Some(n), Some(())) = (n, t) {
            out.push((n.into(), template.clone()));
        }
    }
    out
}

fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in template {t:?}"))?;
        let field = &rest[open + 1..open + close];
        if !TEMPLATE_FIELDS.contains(&field) {
            return Err(format!(
                "unknown placeholder {{{field}}} in {t:?}: use one of {}",
                TEMPLATE_FIELDS
                    .iter()
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// Field-wise merge: the first layer that mentions a header decides it.
pub(super) fn merge_security(layers: &[&schema::SecurityHeaders]) -> schema::SecurityHeaders {
    let pick = |f: fn(&schema::SecurityHeaders) -> &Option<Option<String>>| {
        layers.iter().find_map(|l| f(l).clone())
    };
    schema::SecurityHeaders {
        strict_transport_security: pick(|s| &s.strict_transport_security),
        content_type_options: pick(|s| &s.content_type_options),
        frame_options: pick(|s| &s.frame_options),
        referrer_policy: pick(|s| &s.referrer_policy),
        content_security_policy: pick(|s| &s.content_security_policy),
        permissions_policy: pick(|s| &s.permissions_policy),
        cross_origin_opener_policy: pick(|s| &s.cross_origin_opener_policy),
    }
}

pub(super) fn security_headers(
    s: &schema::SecurityHeaders,
    key: &str,
    p: &mut Problems,
) -> SecurityHeaders {
    let mut out = SecurityHeaders::default();
    let fields: [(&str, &Option<Option<String>>, &'static str); 6] = [
        (
            "content_type_options",
            &s.content_type_options,
            "x-content-type-options",
        ),
        ("frame_options", &s.frame_options, "x-frame-options"),
        ("referrer_policy", &s.referrer_policy, "referrer-policy"),
        (
            "content_security_policy",
            &s.content_security_policy,
            "content-security-policy",
        ),
        (
            "permissions_policy",
            &s.permissions_policy,
            "permissions-policy",
        ),
        (
            "cross_origin_opener_policy",
            &s.cross_origin_opener_policy,
            "cross-origin-opener-policy",
        ),
    ];
    for (field, value, header) in fields {
        if let Some(Some(v)) = value {
            if let Some(v) = note(p, format!("{key}.{field}"), header_value(v)) {
                out.always.push((HeaderName::from_static(header), v));
            }
        }
    }
    if let Some(Some(v)) = &s.strict_transport_security {
        out.hsts = note(
            p,
            format!("{key}.strict_transport_security"),
            header_value(v),
        );
    }
    out
}

pub(super) fn header_pairs<V>(
    map: &BTreeMap<String, V>,
    key: &str,
    p: &mut Problems,
    value_of: impl Fn(&V) -> Result<String, String>,
) -> Vec<(HeaderName, HeaderValue)> {
    map.iter()
        .filter_map(|(name, raw)| {
            let k = format!("{key}.{name}");
            let n = note(p, k.clone(), settable_header(name))?;
            let v = note(p, k, value_of(raw).and_then(|v| header_value(&v)))?;
            Some((n, v))
        })
        .collect()
}

/// A value set on upstream requests: it may be a credential (from `add_file`, or a `${VAR}` in
/// `add`), so it is marked sensitive: `http` shows it as `Sensitive` in `Debug`, and HTTP/2
/// never puts it into a compression table.
pub(super) fn sensitive((name, mut value): (HeaderName, HeaderValue)) -> (HeaderName, HeaderValue) {
    value.set_sensitive(true);
    (name, value)
}
