//! Graceful shutdown: one watch channel that flips to `true` once, on SIGINT
//! or SIGTERM (or when a test asks). Tasks select on [`Shutdown::wait`].

use tokio::sync::watch;

/// A cloneable handle that says whether the process is stopping.
#[derive(Clone, Debug)]
pub struct Shutdown {
    stopping: watch::Receiver<bool>,
}

/// The side that triggers the shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    stopping: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { stopping: tx }, Shutdown { stopping: rx })
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which only happens at exit.
        let _ = self.stopping.wait_for(|stopping| *stopping).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.stopping.send_replace(true);
    }

    /// Triggers on the first SIGINT or SIGTERM.
    pub async fn on_signal(self) -> Self {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        self.trigger();
        self
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
