//! Identity headers sent upstream, rendered from `headers.identity` templates.

use crate::headers::FieldName;
use crate::session::SessionRecord;
use http::HeaderValue;

/// Renders each `(header, template)` for `record`. A value that cannot be a header value
/// (control characters) is left out rather than sent mangled.
pub fn render_identity_headers(
    templates: &[(FieldName, String)],
    record: &SessionRecord,
) -> Vec<(FieldName, HeaderValue)> {
    templates
        .iter()
        .filter_map(|(name, template)| {
            let value = render(template, record);
            HeaderValue::from_bytes(value.as_bytes())
                .ok()
                .map(|v| (name.clone(), v))
        })
        .collect()
}

fn render(template: &str, r: &SessionRecord) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let field = &rest[open + 1..open + close];
        match field {
            "user" => out.push_str(&r.user),
            "email" => out.push_str(r.email.as_deref().unwrap_or("")),
            "groups" => out.push_str(&r.groups.join(",")),
            "name" => out.push_str(r.name.as_deref().unwrap_or("")),
            "sub" => out.push_str(&r.sub),
            "sid" => out.push_str(&r.sid.fingerprint()),
            _ => {}
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    #[test]
    fn templates_render_and_bad_values_are_dropped() {
        let mut r = SessionRecord::new("corp", "u-1", "alice");
        r.email = Some("alice@example.com".into());
        r.groups = vec!["staff".into(), "admins".into()];
        let t = vec![
            (
                HeaderName::from_static("x-user").into(),
                "{user}".to_string(),
            ),
            (
                HeaderName::from_static("x-who").into(),
                "{user} <{email}> in {groups}".to_string(),
            ),
            (
                HeaderName::from_static("x-name").into(),
                "{name}".to_string(),
            ),
        ];
        let h = render_identity_headers(&t, &r);
        assert_eq!(h[0].1, "alice");
        assert_eq!(h[1].1, "alice <alice@example.com> in staff,admins");
        assert_eq!(h[2].1, "");
        r.user = "evil\r\nX-Admin: 1".into();
        let h = render_identity_headers(&t[..1], &r);
        assert!(h.is_empty(), "a value with CR/LF must not become a header");
    }
}
