//! The bodies of answers Portcullis writes itself: error pages for browsers and JSON for
//! programs, the `echo://` description of a request, small pages. No Pingora here: both front
//! doors and the login endpoints use them.

use bytes::Bytes;
use http::StatusCode;

/// The machine-readable code for an error status.
pub fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        414 => "uri_too_long",
        431 => "headers_too_large",
        429 => "rate_limited",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "gateway_timeout",
        _ => "error",
    }
}

/// An error body: a small HTML page for browsers, JSON for everything else.
pub fn error_body(status: StatusCode, reason: &str, html: bool) -> (&'static str, Bytes) {
    if html {
        let title = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        );
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
             h1{{font-size:1.4rem}}p{{color:#555}}</style></head><body><h1>{t}</h1><p>{r}</p>\
             <p><small>Portcullis</small></p></body></html>",
            t = escape_html(&title),
            r = escape_html(reason)
        );
        ("text/html; charset=utf-8", Bytes::from(page))
    } else {
        let body = serde_json::json!({ "error": error_code(status), "message": reason });
        ("application/json", Bytes::from(body.to_string()))
    }
}

/// The `echo://` description of a request as the upstream would have received it.
pub fn echo_body(req: &http::request::Parts, route: &str, html: bool) -> (&'static str, Bytes) {
    let mut headers = serde_json::Map::new();
    for name in req.headers.keys() {
        let values: Vec<serde_json::Value> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        let value = if values.len() == 1 {
            values.into_iter().next().unwrap_or_default()
        } else {
            values.into()
        };
        headers.insert(name.as_str().to_string(), value);
    }
    let uri = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let doc = serde_json::json!({
        "method": req.method.as_str(),
        "uri": uri,
        "path": req.uri.path(),
        "query": req.uri.query(),
        "route": route,
        "headers": headers,
    });
    if !html {
        return ("application/json", Bytes::from(doc.to_string()));
    }
    let mut rows = String::new();
    for (name, value) in &headers {
        let v = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            escape_html(name),
            escape_html(&v)
        ));
    }
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Portcullis echo</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem}}th{{text-align:left;padding-right:1rem;vertical-align:top}}\
         td{{font-family:monospace;word-break:break-all}}</style></head><body><h1>{} {}</h1><p>route: {}</p>\
         <table>{rows}</table></body></html>",
        escape_html(req.method.as_str()),
        escape_html(uri),
        escape_html(route),
    );
    ("text/html; charset=utf-8", Bytes::from(page))
}

/// A small page with a title and one paragraph, for answers people read (sign-in problems).
pub fn page(title: &str, text: &str) -> Bytes {
    Bytes::from(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto\"><h1>{t}</h1><p>{x}</p></body></html>",
        t = escape_html(title),
        x = escape_html(text)
    ))
}

/// `s` with the characters that mean something in HTML escaped.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
