//! The background runtime, for I/O off Pingora's request threads: Redis connections and
//! their pub/sub subscription, identity provider discovery. Pingora gives each service its own runtime and starts them only in
//! `run_forever`; ours exists from the start (and across reloads, which happen on a plain
//! thread), so connections and tasks made here outlive any one configuration.

use std::sync::OnceLock;
use tokio::runtime::{Builder, Handle, Runtime};

static IO: OnceLock<Runtime> = OnceLock::new();

/// The shared I/O runtime, created on first use.
pub fn handle() -> Handle {
    IO.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("portcullis-io")
            .enable_all()
            .build()
            // Start-up only: without a runtime nothing can serve.
            .expect("creating the I/O runtime")
    })
    .handle()
    .clone()
}
