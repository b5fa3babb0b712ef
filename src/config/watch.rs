//! Hot reload: on a change to the file (or its directory, for editors and Kubernetes ConfigMaps
//! that swap files by rename) and on SIGHUP, the whole file is loaded again. A valid result is
//! swapped in atomically; an invalid one is logged and the running configuration stays.
//!
//! The users files of local providers are part of the configuration: a change to one (an edit,
//! or a new file renamed over it) reloads the whole, and an invalid one is refused the same way.

use crate::runtime::Runtime;
use crate::telemetry::{self, metrics};
use arc_swap::ArcSwap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Wait after the first file event so a burst of writes reloads once.
const DEBOUNCE: Duration = Duration::from_millis(150);

pub struct Reloader {
    path: PathBuf,
    current: Arc<ArcSwap<Runtime>>,
    /// Hash of the text last loaded, so that events that do not change the file are ignored.
    last: Mutex<Option<u64>>,
}

impl Reloader {
    pub fn new(path: PathBuf, current: Arc<ArcSwap<Runtime>>) -> Arc<Self> {
        let files = current.load().watched_files();
        let hash = std::fs::read(&path).ok().map(|b| digest(&b, &files));
        Arc::new(Reloader {
            path,
            current,
            last: Mutex::new(hash),
        })
    }

    /// Loads the file and swaps it in if valid. `force` reloads even an unchanged file (SIGHUP:
    /// secrets it points to may have changed).
    pub fn reload(&self, trigger: &str, force: bool) {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                // Mid-rename the file can be briefly missing; the next event retries.
                tracing::warn!(path = %self.path.display(), error = %e, "config file not readable; keeping the running configuration");
                return;
            }
        };
        let hash = digest(&bytes, &self.current.load().watched_files());
        if let Ok(mut last) = self.last.lock() {
            if !force && *last == Some(hash) {
                return;
            }
            *last = Some(hash);
        }
        match crate::config::load(&self.path) {
            Ok(mut next) => {
                let old = self.current.load();
                if let Err(e) = next.activate(Some(&old)) {
                    metrics::CONFIG_RELOADS
                        .with_label_values(&["failure"])
                        .inc();
                    tracing::error!(trigger, error = %e, "configuration rejected; the running configuration stays");
                    telemetry::audit(
                        "config_rejected",
                        serde_json::json!({ "trigger": trigger, "reason": [e] }),
                    );
                    return;
                }
                if next.listeners != old.listeners {
                    tracing::warn!("listen addresses changed: they take effect after a restart; the rest is reloaded");
                }
                if next.threads != old.threads {
                    tracing::warn!("server.threads changed: it takes effect after a restart");
                }
                telemetry::apply_logging(&next.logging);
                let routes = next.routes.routes().len();
                // The new configuration may name other users files: hash what it reads.
                let files = next.watched_files();
                if let Ok(mut last) = self.last.lock() {
                    *last = Some(digest(&bytes, &files));
                }
                self.current.store(Arc::new(next));
                metrics::CONFIG_RELOADS
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(trigger, routes, "configuration reloaded");
                telemetry::audit(
                    "config_reloaded",
                    serde_json::json!({ "trigger": trigger, "routes": routes }),
                );
            }
            Err(errors) => {
                metrics::CONFIG_RELOADS
                    .with_label_values(&["failure"])
                    .inc();
                let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                tracing::error!(trigger, errors = %list.join("; "), "configuration rejected; the running configuration stays");
                telemetry::audit(
                    "config_rejected",
                    serde_json::json!({ "trigger": trigger, "reason": list }),
                );
            }
        }
    }

    /// Starts the SIGHUP listener and the file watcher, each on its own thread.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
        std::thread::Builder::new()
            .name("reload-sighup".into())
            .spawn(move || {
                for _ in signals.forever() {
                    me.reload("sighup", true);
                }
            })?;

        let me = Arc::clone(self);
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(std::io::Error::other)?;
        let dir = parent_dir(&self.path);
        notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;
        let mut watched = vec![dir];
        watch_more(
            &mut watcher,
            &mut watched,
            &self.current.load().watched_files(),
        );
        std::thread::Builder::new()
            .name("reload-watch".into())
            .spawn(move || {
                // The watcher is dropped, and so stopped, only with this thread.
                let mut watcher = watcher;
                while rx.recv().is_ok() {
                    std::thread::sleep(DEBOUNCE);
                    while rx.try_recv().is_ok() {}
                    me.reload("file", false);
                    let files = me.current.load().watched_files();
                    watch_more(&mut watcher, &mut watched, &files);
                }
            })?;
        Ok(())
    }
}

fn parent_dir(path: &std::path::Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Watches the directories of `files` not watched yet (a users file is often replaced by a
/// rename, which only its directory sees).
fn watch_more(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut Vec<PathBuf>,
    files: &[PathBuf],
) {
    for f in files {
        let dir = parent_dir(f);
        if watched.contains(&dir) {
            continue;
        }
        match notify::Watcher::watch(watcher, &dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => watched.push(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a users file's directory; SIGHUP still reloads it");
            }
        }
    }
}

/// A hash of the config's text and of the files it reads that are watched (users files): a
/// change to any of them is a reload.
fn digest(bytes: &[u8], files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    for f in files {
        std::fs::read(f).ok().hash(&mut h);
    }
    h.finish()
}
