//! `SIGHUP` (`kill -HUP`, a unit's `ExecReload`): read the TLS files and the `file:` secrets
//! again now, instead of at their next periodic check. Rotation works without it (certificates
//! are checked every `reload-interval`, secrets every few seconds when used); the signal is for
//! an operator or a renewal hook that wants the new files in force before it moves on.
//!
//! Each reload asked for raises a process-wide generation. What follows a file compares the
//! generation it last saw with [`generation`] (an atomic load) and reads again when they
//! differ; what waits for files to change also waits on [`changed`].

use std::sync::{
    Once, OnceLock,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::watch;

static GENERATION: AtomicU64 = AtomicU64::new(0);

fn announcer() -> &'static watch::Sender<u64> {
    static ANNOUNCER: OnceLock<watch::Sender<u64>> = OnceLock::new();
    ANNOUNCER.get_or_init(|| watch::channel(0).0)
}

/// How many reloads have been asked for since the process started.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Asks everything that follows a file to read it again now (what `SIGHUP` does).
pub fn ask() {
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    announcer().send_replace(generation);
}

/// A receiver whose `changed()` resolves at each reload asked for after this call.
pub fn changed() -> watch::Receiver<u64> {
    announcer().subscribe()
}

/// From now on, `SIGHUP` asks for a reload instead of ending the process (its default action).
/// Once per process: later calls do nothing. Needs a tokio runtime.
pub fn on_sighup() {
    static LISTENING: Once = Once::new();
    LISTENING.call_once(|| {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(mut hangups) => {
                    tokio::spawn(async move {
                        while hangups.recv().await.is_some() {
                            tracing::info!("SIGHUP: reading TLS files and file: secrets again");
                            ask();
                        }
                    });
                }
                Err(err) => tracing::warn!(error = %err, "cannot listen for SIGHUP; files are still checked periodically"),
            }
        }
    });
}
