//! Why a login endpoint could not do what was asked, classified once: each [`Failure`] has one
//! status and one text, and [`Failure::answer`] is the only place they become a response.
//! Counting and auditing stay with the handler, which knows the provider and the user.

use crate::answer::Answer;
use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    MethodNotAllowed,
    NoSuchEndpoint,
    /// An `rd` return URL that is not allowed.
    ReturnUrlNotAllowed,
    UnknownProvider,
    /// The identity provider cannot be reached.
    IdpUnavailable,
    /// The login state could not be sealed.
    CannotStart,
    /// A callback without `state`.
    NoState,
    /// A callback whose login is not in progress here: expired, replayed, or started in
    /// another browser.
    LoginNotInProgress,
    /// The identity provider's answer could not be verified (`iss`, code exchange, ID token).
    NotVerified,
    /// The identity provider answered with an error; both texts come from it, shortened.
    IdpRefused {
        error: String,
        description: String,
    },
    /// A callback without `code`.
    NoCode,
    /// The new session cannot be stored.
    CannotStore,
    /// A hand-over without `code` or `rd`.
    HandoverIncomplete,
    /// A hand-over code that expired or was used.
    HandoverUsed,
    /// A hand-over code issued for another host.
    HandoverOtherHost,
    /// The session store cannot answer.
    SessionsUnavailable,
    /// Logout could not delete the session.
    NotSignedOut,
    /// A login form posted from another site (login CSRF).
    CrossSiteForm,
    /// A login form post larger than any login.
    FormTooLarge,
}

impl Failure {
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Failure::NoSuchEndpoint => StatusCode::NOT_FOUND,
            Failure::ReturnUrlNotAllowed
            | Failure::UnknownProvider
            | Failure::NoState
            | Failure::LoginNotInProgress
            | Failure::NoCode
            | Failure::HandoverIncomplete
            | Failure::HandoverUsed
            | Failure::HandoverOtherHost => StatusCode::BAD_REQUEST,
            Failure::IdpUnavailable => StatusCode::BAD_GATEWAY,
            Failure::CannotStart => StatusCode::INTERNAL_SERVER_ERROR,
            Failure::NotVerified => StatusCode::UNAUTHORIZED,
            Failure::IdpRefused { .. } | Failure::CrossSiteForm => StatusCode::FORBIDDEN,
            Failure::FormTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::CannotStore | Failure::SessionsUnavailable | Failure::NotSignedOut => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The response: a page people read for the steps of a sign-in (always HTML: they happen
    /// in a browser), an error page or JSON (`wants_html`) for the others.
    pub fn answer(&self, wants_html: bool) -> Answer {
        let status = self.status();
        let page = |title: &str, text: &str| Answer::page(status, title, text);
        let error = |reason: &str| Answer::error(status, reason, wants_html);
        match self {
            Failure::MethodNotAllowed => error("method not allowed here"),
            Failure::NoSuchEndpoint => error("no such Portcullis endpoint"),
            Failure::ReturnUrlNotAllowed => error("the return URL (rd) is not allowed"),
            Failure::UnknownProvider => error("unknown provider"),
            Failure::IdpUnavailable => page(
                "Sign-in is unavailable",
                "The identity provider cannot be reached right now. Please try again in a moment.",
            ),
            Failure::CannotStart => error("could not start the login"),
            Failure::NoState => error("the sign-in response has no state"),
            Failure::LoginNotInProgress => page(
                "This sign-in link is no longer valid",
                "It has expired, was already used, or was started in another browser. Please open the page you wanted again.",
            ),
            Failure::NotVerified => page(
                "Sign-in failed",
                "The identity provider's answer could not be verified. Please try again.",
            ),
            Failure::IdpRefused { error, description } => page(
                "Sign-in was not completed",
                &format!("The identity provider answered: {error}. {description}"),
            ),
            Failure::NoCode => error("the sign-in response has no code"),
            Failure::CannotStore => page(
                "Sign-in is temporarily unavailable",
                "Sessions cannot be stored right now. Please try again in a moment.",
            ),
            Failure::HandoverIncomplete => error("code and rd are required"),
            Failure::HandoverUsed => page(
                "This sign-in link is no longer valid",
                "It has expired or was already used. Please open the page you wanted again.",
            ),
            Failure::HandoverOtherHost => error("this code was issued for another host"),
            Failure::SessionsUnavailable => error("sessions are temporarily unavailable"),
            Failure::NotSignedOut => error(
                "sessions are temporarily unavailable; you are not signed out yet, please try again",
            ),
            Failure::CrossSiteForm => error("a sign-in form may only be sent from this site's own sign-in page"),
            Failure::FormTooLarge => error("the sign-in form is too large"),
        }
    }
}
