//! Signing out (here and, when it supports it, at the identity provider) and `userinfo`.

use super::{EndpointRequest, Failure};
use crate::answer::Answer;
use crate::auth::Auth;
use crate::telemetry::{audit, metrics};
use http::StatusCode;

pub(super) async fn logout(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    // A return URL that is not allowed is ignored, never followed: signing out must work
    // whatever link brought the user here.
    let rd = req
        .param("rd")
        .and_then(|rd| auth.config.redirects.check(&rd, &req.here));
    let session = auth.session(req.cookie_header).await.ok().flatten();
    let mut idp_logout = None;
    if let Some(record) = &session {
        if let Err(e) = auth.store.delete(&record.sid).await {
            metrics::count_store_error(&e);
            return Failure::NotSignedOut.answer(req.wants_html);
        }
        auth.cache.invalidate(&record.sid);
        audit(
            "logout",
            serde_json::json!({
                "user": record.user, "session": record.sid.fingerprint(),
                "client_ip": req.client_ip.map(|i| i.to_string()),
            }),
        );
        idp_logout = auth.provider(&record.provider).and_then(|p| {
            p.logout_url(
                record.id_token.as_deref(),
                rd.as_ref().map(url::Url::as_str),
            )
        });
    }
    let mut answer = match (idp_logout, rd) {
        (Some(url), _) => Answer::redirect(&url),
        (None, Some(rd)) => Answer::redirect(rd.as_str()),
        (None, None) => Answer::page(StatusCode::OK, "Signed out", "You have been signed out."),
    }
    .with_cookie(&auth.config.cookie.clear_cookie());
    if auth.config.handover_cookie != auth.config.cookie {
        // A hand-over may have left a host-only cookie here too.
        answer = answer.with_cookie(&auth.config.handover_cookie.clear_cookie());
    }
    answer
}

pub(super) async fn userinfo(auth: &Auth, req: &EndpointRequest<'_>) -> Answer {
    match auth.session(req.cookie_header).await {
        Ok(Some(r)) => Answer::json(
            StatusCode::OK,
            &serde_json::json!({
                "user": r.user, "email": r.email, "name": r.name, "groups": r.groups, "sub": r.sub, "amr": r.amr,
                "provider": r.provider, "expires_at": r.expires_at,
            }),
        ),
        Ok(None) => Answer::json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "unauthenticated" }),
        ),
        Err(_) => Answer::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": "unavailable" }),
        ),
    }
}
