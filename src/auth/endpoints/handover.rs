//! The session hand-over to a host outside the cookie domain: after login, a one-time code
//! (single use, 30 s) lets that host's `/.portcullis/session` set a host-only cookie.

use super::login::bounce;
use super::{b64, now, same_origin, EndpointRequest, Failure};
use crate::answer::Answer;
use crate::auth::Auth;
use crate::session::{SessionCookie, SessionId, SessionRecord};
use crate::telemetry::metrics;
use std::time::Duration;

/// Stores a one-time code that lets `rd`'s host set its own cookie for this session.
pub(super) async fn handover_url(
    auth: &Auth,
    record: &SessionRecord,
    rd: &url::Url,
) -> Result<String, Failure> {
    let mut code = [0u8; 32];
    rand::fill(&mut code);
    let code = b64(&code);
    let host = rd.host_str().unwrap_or_default();
    let mut payload = Vec::with_capacity(24 + host.len());
    payload.extend_from_slice(record.sid.as_bytes());
    payload.extend_from_slice(&record.expires_at.to_be_bytes());
    payload.extend_from_slice(host.as_bytes());
    if let Err(e) = auth.store.put_handover(&code, &payload).await {
        metrics::count_store_error(&e);
        return Err(Failure::CannotStore);
    }
    let mut url = rd.clone();
    url.set_path("/.portcullis/session");
    url.set_fragment(None);
    url.query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("rd", rd.as_str());
    Ok(url.to_string())
}

pub(super) async fn handover(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    let html = req.wants_html;
    let (Some(code), Some(rd)) = (req.param("code"), req.param("rd")) else {
        return Failure::HandoverIncomplete.answer(html);
    };
    let Some(rd) = auth
        .config
        .redirects
        .check(&rd, &req.here)
        .filter(|u| same_origin(u, &req.here))
    else {
        return Failure::ReturnUrlNotAllowed.answer(html);
    };
    let payload = match auth.store.take_handover(&code).await {
        Ok(Some(p)) => p,
        Ok(None) => return Failure::HandoverUsed.answer(html),
        Err(e) => {
            metrics::count_store_error(&e);
            return Failure::SessionsUnavailable.answer(html);
        }
    };
    let host_ok =
        payload.len() > 24 && req.here.host_str().map(str::as_bytes) == Some(&payload[24..]);
    if !host_ok {
        return Failure::HandoverOtherHost.answer(html);
    }
    let mut sid = [0u8; SessionId::LEN];
    sid.copy_from_slice(&payload[..SessionId::LEN]);
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&payload[16..24]);
    let cookie = SessionCookie {
        sid: SessionId::from_bytes(sid),
        expires_at: u64::from_be_bytes(exp),
    };
    let host_only = &auth.config.handover_cookie;
    let max_age = Duration::from_secs(cookie.expires_at.saturating_sub(now(auth)));
    bounce(auth, rd.as_str())
        .with_cookie(&host_only.set_cookie(&cookie.encode(&auth.config.keys), max_age))
}
