//! A deadline for receiving each request's head. Pingora times out each read of a request
//! head separately, so a client that trickles one byte at a time keeps its connection, and a
//! few thousand such clients exhaust file descriptors ("slowloris"). [`HeadDeadline`] wraps
//! the proxy's connection handling: the head of the first request must be complete within
//! `server.timeouts.request_header` of the connection being accepted, and each later head
//! within `idle + request_header` of the previous answer; otherwise the connection is closed.
//!
//! The proxy tells the deadline where a connection is through a task-local clock: the head
//! was read ([`head_received`], from `request_filter`) and the answer is done
//! ([`request_done`], from `logging`). HTTP/1 runs a whole connection in one task, so the
//! clock is always there for it.

use crate::runtime::Runtime;
use crate::telemetry::metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

tokio::task_local! {
    static CLOCK: Arc<HeadClock>;
}

/// Where one connection stands: waiting for a request head until a deadline, or serving one.
struct HeadClock {
    start: Instant,
    /// Milliseconds after `start` by which the next head must be complete; 0 while a
    /// request is being served.
    deadline_ms: AtomicU64,
    header: Duration,
    idle: Duration,
}

impl HeadClock {
    fn new(header: Duration, idle: Duration) -> HeadClock {
        let clock = HeadClock {
            start: Instant::now(),
            deadline_ms: AtomicU64::new(0),
            header,
            idle,
        };
        clock.wait_for_head(header);
        clock
    }

    fn wait_for_head(&self, within: Duration) {
        let at = self.start.elapsed() + within;
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX).max(1);
        self.deadline_ms.store(ms, Ordering::Relaxed);
    }

    /// Time left before the head must be complete; `None` while serving a request.
    fn remaining(&self) -> Option<Duration> {
        match self.deadline_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms).saturating_sub(self.start.elapsed())),
        }
    }
}

/// The head of the current request has been read: no deadline until its answer is done.
pub fn head_received() {
    let _ = CLOCK.try_with(|c| c.deadline_ms.store(0, Ordering::Relaxed));
}

/// The current request is answered: the next head must come within `idle + request_header`.
pub fn request_done() {
    let _ = CLOCK.try_with(|c| c.wait_for_head(c.idle + c.header));
}

/// The proxy's connection handling, closing connections whose request head is late.
pub struct HeadDeadline<A> {
    pub inner: Arc<A>,
    pub runtime: Arc<ArcSwap<Runtime>>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeadDeadline<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (header, idle) = {
            let rt = self.runtime.load();
            (rt.header_timeout, rt.idle_timeout)
        };
        let clock = Arc::new(HeadClock::new(header, idle));
        let serve = CLOCK.scope(
            Arc::clone(&clock),
            ServerApp::process_new(&self.inner, stream, shutdown),
        );
        tokio::pin!(serve);
        loop {
            let wait = clock.remaining().unwrap_or(header);
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            // The connection is polled on every wake (several per request), the timer only
            // on its first poll and once it has fired: registered once, it wakes this task by
            // itself, and polling it on every wake cost more than the rest of this wrapper.
            let mut registered = false;
            let served = std::future::poll_fn(|cx| {
                if let Poll::Ready(done) = serve.as_mut().poll(cx) {
                    return Poll::Ready(Some(done));
                }
                if !registered || sleep.is_elapsed() {
                    registered = true;
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending
            })
            .await;
            if let Some(done) = served {
                return done;
            }
            if clock.remaining().is_some_and(|left| left.is_zero()) {
                tracing::debug!("request head not complete in time; connection closed");
                metrics::REQUESTS.with_label_values(&["-", "408"]).inc();
                return None;
            }
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.inner.as_ref()).await;
    }
}
