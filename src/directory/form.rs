//! The pages of the built-in login form: sign in (user name and password), the second step
//! (a TOTP or recovery code), and the messages in between. Plain HTML with one inline style
//! sheet — no script, no external asset, as the strict CSP of Portcullis' own pages demands —
//! labelled fields with `autocomplete` hints, errors announced with `role="alert"`, and the
//! colours of the user's light or dark scheme.

use crate::pages::escape_html;
use bytes::Bytes;

/// Where the form posts (the page's own URL, so the CSP's `form-action 'self'` holds).
pub const ACTION: &str = "/.portcullis/login";

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d2330;--muted:#5b6478;--bg:#f4f5f8;--card:#fff;--line:#c9cfdb;--accent:#2f5bd3;--err:#b3261e;--errbg:#fdecea}\
@media (prefers-color-scheme:dark){:root{--fg:#e8eaf0;--muted:#a5adbf;--bg:#14171f;--card:#1d2230;--line:#3a4256;--accent:#7d9cff;--err:#ffb4ab;--errbg:#3b1d1b}}\
*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif}\
main{width:100%;max-width:24rem;margin:2rem 1rem;padding:2rem;background:var(--card);border:1px solid var(--line);border-radius:12px}\
h1{font-size:1.4rem;margin:0 0 .25rem}\
p{margin:.5rem 0 1rem;color:var(--muted)}\
label{display:block;font-weight:600;margin:1rem 0 .3rem}\
input[type=text],input[type=password]{width:100%;padding:.6rem .7rem;font:inherit;color:inherit;background:transparent;border:1px solid var(--line);border-radius:8px}\
input:focus-visible,button:focus-visible,a:focus-visible{outline:3px solid var(--accent);outline-offset:2px}\
button{width:100%;margin-top:1.5rem;padding:.7rem;font:inherit;font-weight:600;color:#fff;background:var(--accent);border:0;border-radius:8px;cursor:pointer}\
@media (prefers-color-scheme:dark){button{color:#0b1020}}\
.alert{margin:1rem 0 0;padding:.6rem .8rem;color:var(--err);background:var(--errbg);border-radius:8px}\
.hint{font-size:.9rem}\
a{color:var(--accent)}\
footer{margin-top:1.5rem;font-size:.8rem;color:var(--muted)}";

fn document(title: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head><body><main>{body}\
         <footer>Portcullis</footer></main></body></html>",
        t = escape_html(title),
    ))
}

fn alert(error: Option<&str>) -> String {
    match error {
        Some(e) => format!(
            "<p class=\"alert\" id=\"error\" role=\"alert\">{}</p>",
            escape_html(e)
        ),
        None => String::new(),
    }
}

/// The first step: user name and password. `state` is the sealed per-attempt token sent back
/// as it is; `username` refills the field after a failure; `error` is shown above the fields.
pub fn sign_in(state: &str, username: &str, error: Option<&str>) -> Bytes {
    let described = if error.is_some() {
        " aria-describedby=\"error\" aria-invalid=\"true\""
    } else {
        ""
    };
    let (user_focus, pass_focus) = if username.is_empty() {
        (" autofocus", "")
    } else {
        ("", " autofocus")
    };
    let body = format!(
        "<h1>Sign in</h1><p>Enter your user name and password to continue.</p>{alert}\
         <form method=\"post\" action=\"{ACTION}\">\
         <input type=\"hidden\" name=\"state\" value=\"{state}\">\
         <label for=\"username\">User name</label>\
         <input type=\"text\" id=\"username\" name=\"username\" value=\"{user}\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required maxlength=\"128\"{user_focus}{described}>\
         <label for=\"password\">Password</label>\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required maxlength=\"1024\"{pass_focus}{described}>\
         <button type=\"submit\">Sign in</button></form>",
        alert = alert(error),
        state = escape_html(state),
        user = escape_html(username),
    );
    document("Sign in", &body)
}

/// The second step: a code from the authenticator app, or a recovery code.
pub fn second_factor(state: &str, restart: &str, error: Option<&str>) -> Bytes {
    let described = if error.is_some() {
        " aria-describedby=\"error\" aria-invalid=\"true\""
    } else {
        ""
    };
    let body = format!(
        "<h1>Two-step verification</h1>\
         <p>Enter the 6-digit code from your authenticator app.</p>{alert}\
         <form method=\"post\" action=\"{ACTION}\">\
         <input type=\"hidden\" name=\"state\" value=\"{state}\">\
         <label for=\"code\">Code</label>\
         <input type=\"text\" id=\"code\" name=\"code\" autocomplete=\"one-time-code\" autocapitalize=\"none\" spellcheck=\"false\" required maxlength=\"64\" autofocus{described}>\
         <p class=\"hint\">Lost your device? Enter one of your recovery codes instead.</p>\
         <button type=\"submit\">Verify</button></form>\
         <p class=\"hint\"><a href=\"{restart}\">Sign in as someone else</a></p>",
        alert = alert(error),
        state = escape_html(state),
        restart = escape_html(restart),
    );
    document("Two-step verification", &body)
}

/// A message instead of a form (too many attempts, enrolment needed, an expired form), with a
/// link to start again when there is one.
pub fn message(title: &str, text: &str, again: Option<&str>) -> Bytes {
    let link = match again {
        Some(url) => format!(
            "<p><a href=\"{}\">Back to sign in</a></p>",
            escape_html(url)
        ),
        None => String::new(),
    };
    let body = format!(
        "<h1>{}</h1><p role=\"alert\">{}</p>{link}",
        escape_html(title),
        escape_html(text)
    );
    document(title, &body)
}

/// After a successful sign-in, when the next page is on another origin: a same-origin page
/// that moves on at once. A form's `form-action 'self'` would block a redirect elsewhere, and
/// a `SameSite=Strict` cookie is sent on this navigation.
pub fn continue_to(url: &str) -> Bytes {
    let esc = escape_html(url);
    Bytes::from(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={esc}\">\
         <title>Signed in</title></head><body><p><a href=\"{esc}\">Continue</a></p></body></html>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let page = sign_in("st\"ate", "<script>", Some("Incorrect"));
        let s = std::str::from_utf8(&page).unwrap();
        assert!(s.contains("value=\"st&quot;ate\""));
        assert!(s.contains("&lt;script&gt;") && !s.contains("<script>"));
        assert!(s.contains("role=\"alert\""));
        assert!(s.contains("name=\"username\"") && s.contains("name=\"password\""));
        let page = second_factor("s", "/.portcullis/login?rd=%2F&x=\"", None);
        let s = std::str::from_utf8(&page).unwrap();
        assert!(s.contains("name=\"code\"") && s.contains("&quot;"));
        let page = continue_to("https://app.example.com/?a=1&b=\"2\"");
        let s = std::str::from_utf8(&page).unwrap();
        assert!(s.contains("a=1&amp;b=&quot;2&quot;"));
    }
}
