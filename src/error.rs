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

/// Why a long operation was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A signal (SIGINT 2, SIGTERM 15): the CLI exits 128 + the signal.
    Signal(i32),
    /// The job's `timeout` passed.
    Timeout(std::time::Duration),
    /// The daemon is shutting down.
    Shutdown,
}

/// An operation stopped on request, after undoing what it had started.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{} (what it had started was undone)", describe_stop(.0))]
pub struct Interrupted(pub Stop);

fn describe_stop(stop: &Stop) -> String {
    match stop {
        Stop::Signal(2) => "interrupted by SIGINT".into(),
        Stop::Signal(15) => "interrupted by SIGTERM".into(),
        Stop::Signal(n) => format!("interrupted by signal {n}"),
        Stop::Timeout(d) => format!(
            "stopped after its timeout of {}",
            humantime::format_duration(*d)
        ),
        Stop::Shutdown => "stopped by the daemon's shutdown".into(),
    }
}

type StopCell = std::sync::Arc<std::sync::Mutex<Option<Stop>>>;

/// How a long operation is told to stop: by a signal, by a timeout, or by the daemon's
/// shutdown. Cheap to clone; every clone sees the same stop.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    token: tokio_util::sync::CancellationToken,
    stop: StopCell,
    /// The stop of the cancel this one is a child of.
    parent: Option<StopCell>,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Stops everything that watches this cancel (and its children); the first stop's reason
    /// is the one reported.
    pub fn cancel(&self, why: Stop) {
        let mut stop = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stop.get_or_insert(why);
        drop(stop);
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    fn reason(&self) -> Stop {
        let read = |cell: &StopCell| {
            *cell
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        read(&self.stop)
            .or_else(|| self.parent.as_ref().and_then(read))
            .unwrap_or(Stop::Shutdown)
    }

    /// The signal that stopped it, if a signal did.
    pub fn signal(&self) -> Option<i32> {
        if !self.is_cancelled() {
            return None;
        }
        match self.reason() {
            Stop::Signal(n) => Some(n),
            _ => None,
        }
    }

    /// Waits until cancelled; the `Interrupted` to report.
    pub async fn cancelled(&self) -> Interrupted {
        self.token.cancelled().await;
        Interrupted(self.reason())
    }

    /// A cancel that fires with this one, and also on its own (a per-run timeout).
    pub fn child(&self) -> Cancel {
        Cancel {
            token: self.token.child_token(),
            stop: StopCell::default(),
            parent: Some(self.stop.clone()),
        }
    }

    /// A child of this cancel that also fires after `limit`, for as long as the returned
    /// guard lives.
    pub fn with_timeout(&self, limit: std::time::Duration) -> (Cancel, TimeoutGuard) {
        let child = self.child();
        let fire = child.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            fire.cancel(Stop::Timeout(limit));
        });
        (child, TimeoutGuard(timer))
    }
}

/// Stops a `Cancel::with_timeout` timer when dropped.
#[derive(Debug)]
pub struct TimeoutGuard(tokio::task::JoinHandle<()>);

impl Drop for TimeoutGuard {
    fn drop(&mut self) {
        self.0.abort();
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
