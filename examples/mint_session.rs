//! Creates a session in a Redis session store and prints its cookie value, as a login would:
//! for the benchmark's authenticated row (bench/run.sh), which measures the cache-hit path
//! without driving an identity provider for every run.
//!
//! usage: mint_session REDIS_URL SECRET [KEY_PREFIX] [PROVIDER]

use portcullis::session::{
    RedisSettings, RedisStore, RedisTarget, SessionCookie, SessionKeys, SessionRecord,
    SessionStore, SharedClock, StoreSettings, SystemClock,
};
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(secret)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: mint_session REDIS_URL SECRET [KEY_PREFIX] [PROVIDER]");
        return ExitCode::FAILURE;
    };
    let keys = match SessionKeys::from_secrets(&[secret]) {
        Ok(k) => Arc::new(k),
        Err(e) => {
            eprintln!("mint_session: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut settings = RedisSettings::new(RedisTarget::Url(url.clone()));
    if let Some(prefix) = args.get(3) {
        settings.key_prefix = prefix.clone();
    }
    let provider = args.get(4).map_or("bench", String::as_str);
    let clock: SharedClock = Arc::new(SystemClock);
    let store =
        match RedisStore::connect(settings, StoreSettings::default(), Arc::clone(&keys), clock)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mint_session: {e}");
                return ExitCode::FAILURE;
            }
        };
    let mut record = SessionRecord::new(provider, "bench-user", "bench");
    record.email = Some("bench@example.com".into());
    record.groups = vec!["staff".into()];
    match store.create(record).await {
        Ok(created) => {
            let cookie = SessionCookie {
                sid: created.record.sid,
                expires_at: created.record.expires_at,
            };
            println!("{}", cookie.encode(&keys));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mint_session: {e}");
            ExitCode::FAILURE
        }
    }
}
