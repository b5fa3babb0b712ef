//! Portcullis: an identity-aware reverse proxy and forward-auth server on Pingora.
//!
//! The engine (`config`, `runtime`, `request`, `path`, `routes`, `decision`, `headers`) knows
//! nothing of Pingora; `gateway` and `admin` adapt it to Pingora, `server` wires them up.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod admin;
pub(crate) mod answer;
pub(crate) mod auth;
pub(crate) mod background;
pub mod config;
pub(crate) mod decision;
pub(crate) mod directory;
/// `portcullis gen-totp`: a new TOTP secret with its `otpauth://` URI and QR code.
pub use directory::totp::enrolment_text as totp_enrolment;
pub(crate) mod gateway;
pub(crate) mod headers;
pub(crate) mod issuer;
/// `portcullis gen-key`: a new PEM private key for the issuer.
pub use issuer::keys::gen_key_pem;
pub(crate) mod oidc;
pub(crate) mod pages;
pub mod password;
pub(crate) mod path;
pub(crate) mod policy;
pub mod ratelimit;
pub(crate) mod redirect;
pub(crate) mod refusal;
pub(crate) mod request;
pub(crate) mod routes;
pub mod runtime;
pub(crate) mod secret;
pub mod server;
pub mod session;
pub mod telemetry;
#[cfg(test)]
mod test_inputs;
pub(crate) mod upstream;
