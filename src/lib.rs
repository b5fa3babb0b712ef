//! Portcullis: an identity-aware reverse proxy and forward-auth server on Pingora.
//!
//! The engine (`config`, `runtime`, `request`, `path`, `routes`, `decision`, `headers`) knows
//! nothing of Pingora; `gateway` and `admin` adapt it to Pingora, `server` wires them up.
#![forbid(unsafe_code)]

pub mod admin;
pub mod answer;
pub mod auth;
pub mod background;
pub mod config;
pub mod decision;
pub mod gateway;
pub mod headers;
pub mod oidc;
pub mod pages;
pub mod path;
pub mod policy;
pub mod redirect;
pub mod refusal;
pub mod request;
pub mod routes;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod upstream;
