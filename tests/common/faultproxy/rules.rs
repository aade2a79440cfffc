//! The fault proxy's rules: which requests meet which fault.

use super::http::Request;

/// What the proxy does to a request a rule picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers this status (500, 503, ...) with an S3 XML error body; the server never sees
    /// the request.
    Status(u16),
    /// Forwards the first N bytes of the request (head included), then resets the connection.
    ResetRequestAfter(usize),
    /// Forwards the request, then the response head and N bytes of its body, then resets.
    ResetResponseAfter(usize),
    /// Like `ResetResponseAfter`, but closes cleanly: a body shorter than its Content-Length.
    CloseResponseAfter(usize),
    /// Reads the request and never answers.
    Stall,
    /// Forwards the request, then the response head and N bytes of its body, then nothing.
    StallResponseAfter(usize),
    /// Forwards the request and reads the whole response, but sends none of it and closes the
    /// connection: the server did the work, the client never hears of it.
    DropResponse,
}

/// Which of the matching requests a rule acts on.
#[derive(Debug, Clone, Copy)]
enum When {
    Always,
    Nth(usize),
    Every(usize),
    Fraction { per_million: u64, seed: u64 },
}

/// A fault and the requests it applies to: every request unless narrowed by method, path and
/// query substrings, and by `nth`/`every`/`fraction`/`times`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(super) fault: Fault,
    method: Option<String>,
    path: Option<String>,
    query: Option<String>,
    when: When,
    pub(super) limit: Option<usize>,
}

impl Rule {
    /// `fault` on every request.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            fault,
            method: None,
            path: None,
            query: None,
            when: When::Always,
            limit: None,
        }
    }

    /// Only requests with this method (`GET`, `PUT`, `POST`, `HEAD`, `DELETE`).
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path (before `?`) contains `part`, e.g. an object key.
    pub fn path(mut self, part: &str) -> Rule {
        self.path = Some(part.to_string());
        self
    }

    /// Only requests whose query string contains `part`, e.g. `uploadId`, `partNumber`,
    /// `list-type`.
    pub fn query(mut self, part: &str) -> Rule {
        self.query = Some(part.to_string());
        self
    }

    /// Only the `n`th matching request (1-based).
    pub fn nth(mut self, n: usize) -> Rule {
        self.when = When::Nth(n);
        self
    }

    /// Every `k`th matching request (the `k`th, `2k`th, ...).
    pub fn every(mut self, k: usize) -> Rule {
        self.when = When::Every(k.max(1));
        self
    }

    /// A `fraction` (0 to 1) of the matching requests, chosen by a generator seeded with `seed`:
    /// the same requests in the same order meet the same faults in every run.
    pub fn fraction(mut self, fraction: f64, seed: u64) -> Rule {
        self.when = When::Fraction {
            per_million: (fraction.clamp(0.0, 1.0) * 1e6) as u64,
            seed,
        };
        self
    }

    /// At most `n` injections by this rule.
    pub fn times(mut self, n: usize) -> Rule {
        self.limit = Some(n);
        self
    }

    /// The longest run of consecutive matching requests this rule picks among the first
    /// `within`: with requests sent one at a time, no request meets more faults in a row than
    /// this, so a test can show its retry budget suffices for its seed.
    pub fn longest_run(&self, within: usize) -> usize {
        let (mut longest, mut run) = (0, 0);
        for count in 1..=within {
            run = if self.picks(count) { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        longest
    }

    pub(super) fn matches(&self, request: &Request) -> bool {
        self.method.as_ref().is_none_or(|m| *m == request.method)
            && self.path.as_ref().is_none_or(|p| request.path.contains(p))
            && self
                .query
                .as_ref()
                .is_none_or(|q| request.query.contains(q))
    }

    /// Whether the `count`th matching request is picked.
    pub(super) fn picks(&self, count: usize) -> bool {
        match self.when {
            When::Always => true,
            When::Nth(n) => count == n,
            When::Every(k) => count.is_multiple_of(k),
            When::Fraction { per_million, seed } => {
                splitmix64(seed ^ count as u64) % 1_000_000 < per_million
            }
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A request the proxy saw, and the fault it met.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `If-Match` header, if any.
    pub if_match: Option<String>,
    pub fault: Option<Fault>,
}
