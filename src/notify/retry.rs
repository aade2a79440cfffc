//! When a notification that did not get through is sent again: a few attempts, backoff that
//! doubles, and a bound on the whole, so a flaky receiver never holds up a run for long.

use std::time::Duration;

use hyper::StatusCode;

/// How many times, how soon and for how long in total a notification is attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the first retry; each later one doubles it.
    pub backoff: Duration,
    /// The most the attempts and the waits between them may take together; each attempt's
    /// timeout is cut to what is left of it.
    pub total: Duration,
}

impl RetryPolicy {
    /// Three attempts, 1 s then 2 s apart, 30 s at most in all.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 3,
        backoff: Duration::from_secs(1),
        total: Duration::from_secs(30),
    };

    /// The wait after failed attempt `attempt` (from 1), or the server's `Retry-After` when it
    /// gave one; never more than `total` (a receiver may answer any number).
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after
            .unwrap_or_else(|| {
                self.backoff
                    .saturating_mul(1 << attempt.saturating_sub(1).min(10))
            })
            .min(self.total)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

/// What an attempt's answer means for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Sent,
    /// The receiver may take it later: a server error, 429 Too Many Requests, no answer.
    Retry,
    /// The receiver refuses it for good (a wrong URL, a revoked token): sending it again
    /// would be refused again.
    GiveUp,
}

impl Verdict {
    /// The verdict on an HTTP answer: 2xx is delivered, 5xx and 429 are retried, the rest
    /// (4xx, and 3xx since redirects are not followed) is final.
    pub fn of_status(status: StatusCode) -> Verdict {
        if status.is_success() {
            Verdict::Sent
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Verdict::Retry
        } else {
            Verdict::GiveUp
        }
    }
}

/// A `Retry-After` given in seconds (the HTTP-date form is not used by ping services).
pub fn retry_after(value: Option<&hyper::header::HeaderValue>) -> Option<Duration> {
    let secs: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_429_are_retried_other_refusals_are_not() {
        for (code, verdict) in [
            (200, Verdict::Sent),
            (204, Verdict::Sent),
            (500, Verdict::Retry),
            (502, Verdict::Retry),
            (503, Verdict::Retry),
            (429, Verdict::Retry),
            (400, Verdict::GiveUp),
            (401, Verdict::GiveUp),
            (404, Verdict::GiveUp),
            (410, Verdict::GiveUp),
            (301, Verdict::GiveUp),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(Verdict::of_status(status), verdict, "{code}");
        }
    }

    #[test]
    fn waits_double_unless_the_server_says_when() {
        let p = RetryPolicy::DEFAULT;
        assert_eq!(p.wait(1, None), Duration::from_secs(1));
        assert_eq!(p.wait(2, None), Duration::from_secs(2));
        assert_eq!(p.wait(3, None), Duration::from_secs(4));
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        let header = hyper::header::HeaderValue::from_static(" 5 ");
        assert_eq!(retry_after(Some(&header)), Some(Duration::from_secs(5)));
        let huge = hyper::header::HeaderValue::from_static("18446744073709551615");
        assert_eq!(p.wait(1, retry_after(Some(&huge))), p.total);
        let date = hyper::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after(Some(&date)), None);
        assert_eq!(retry_after(None), None);
    }
}
