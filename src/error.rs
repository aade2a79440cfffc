//! Errors shared by every layer: the usage error (exit code 2), printing an error's causes once,
//! and the exit code of a failed command.

use std::error::Error as StdError;

/// A mistake in how pgkeep was invoked (unknown job, ambiguous choice, bad option): exit code 2.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error and its causes as one line, `outer: cause: root`, each cause printed once: a cause
/// whose text the line already holds (some libraries repeat their source in their own message)
/// is left out.
pub fn report(error: &(dyn StdError + 'static)) -> String {
    let mut line = String::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        let text = text.trim();
        if !text.is_empty() && !line.contains(text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(text);
        }
        current = e.source();
    }
    line
}

/// A command stopped by a signal (Ctrl-C, SIGTERM) after cleaning up: exit code 128 + signal.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted by {} (what it had started was undone)", signal_name(.signal))]
pub struct Interrupted {
    pub signal: i32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // thiserror passes fields by reference
fn signal_name(signal: &i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

/// How a long operation is told to stop: by a signal (its number is the exit code's), by a
/// timeout, or by the daemon's shutdown. Cheap to clone; every clone sees the same stop.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    token: tokio_util::sync::CancellationToken,
    signal: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Stops everything that watches this cancel; `signal` is 0 for a stop that is not a signal.
    pub fn cancel(&self, signal: i32) {
        let _ = self.signal.compare_exchange(
            0,
            signal,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The signal that cancelled it, if a signal did.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            s => Some(s),
        }
    }

    /// Waits until cancelled; the `Interrupted` to report.
    pub async fn cancelled(&self) -> Interrupted {
        self.token.cancelled().await;
        Interrupted {
            signal: self.signal.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// A cancel that fires with this one, and also on its own (a per-run timeout).
    pub fn child(&self) -> Cancel {
        Cancel {
            token: self.token.child_token(),
            signal: self.signal.clone(),
        }
    }
}

/// Whether an I/O error carries an error of type `T` inside (a layer below wrapped its own
/// error to pass it through `Read`).
pub fn wraps<T: StdError + 'static>(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(<dyn StdError + Send + Sync>::is::<T>)
}

/// `report` for an `anyhow::Error`, whose chain starts with its own context.
pub fn report_anyhow(error: &anyhow::Error) -> String {
    report(error.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner: connection refused")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let e = Outer(Inner(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        assert_eq!(report(&e), "outer failed: inner: connection refused");
    }
}
