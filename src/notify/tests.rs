//! The notifier's URL handling, and its retries against a local HTTP server.

use super::*;

#[test]
fn ping_suffixes_go_before_the_query() {
    assert_eq!(
        with_suffix("https://hc-ping.com/abc", "/start"),
        "https://hc-ping.com/abc/start"
    );
    assert_eq!(
        with_suffix("https://hc.example/abc/?rid=1", "/fail"),
        "https://hc.example/abc/fail?rid=1"
    );
}

#[test]
fn logged_urls_keep_only_scheme_and_host() {
    assert_eq!(
        redact("https://user:tok@hooks.example.com:8443/services/T0/B1?x=1"),
        "https://hooks.example.com:8443"
    );
    assert_eq!(redact("http://127.0.0.1:9/x"), "http://127.0.0.1:9");
}

/// What the test server does with one request.
#[derive(Clone, Copy)]
enum Answer {
    /// Closes the connection without answering: a network blip.
    Reset,
    /// Answers this status.
    Status(u16),
    /// Answers 429 with `Retry-After: 1`.
    SlowDown,
}

/// A local HTTP server that answers its requests as `script` says, in order, then 200; it
/// records each request's method and path.
async fn server(script: Vec<Answer>) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut script = script.into_iter();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then as much body as Content-Length says.
            loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            let line: Vec<&str> = text.split_whitespace().take(2).collect();
            log.lock().unwrap().push(line.join(" "));
            let answer = match script.next().unwrap_or(Answer::Status(200)) {
                Answer::Reset => continue,
                Answer::Status(code) => format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
                Answer::SlowDown => "HTTP/1.1 429 X\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
            };
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (base, seen)
}

fn quick() -> Notifier {
    Notifier::with_retry(RetryPolicy {
        attempts: 3,
        backoff: Duration::from_millis(20),
        total: Duration::from_secs(5),
    })
}

fn ping(url: &str) -> Notifications {
    Notifications {
        webhook_url: None,
        ping_url: Some(url.to_string()),
    }
}

#[tokio::test]
async fn a_ping_lost_to_a_blip_is_sent_again() {
    let (base, seen) = server(vec![Answer::Reset, Answer::Status(503)]).await;
    quick()
        .started(&ping(&format!("{base}/p")), "nightly")
        .await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /p/start", "GET /p/start", "GET /p/start"]
    );
}

#[tokio::test]
async fn a_webhook_refused_for_good_is_not_sent_again() {
    let (base, seen) = server(vec![Answer::Status(404), Answer::Status(400)]).await;
    let targets = Notifications {
        webhook_url: Some(format!("{base}/hook")),
        ping_url: None,
    };
    let failure = Outcome::Failure {
        backup: None,
        error: "x".into(),
    };
    quick()
        .finished(&targets, "nightly", &failure, Duration::from_secs(1))
        .await;
    assert_eq!(*seen.lock().unwrap(), ["POST /hook"]);
}

#[tokio::test]
async fn retries_stop_after_the_last_attempt() {
    let (base, seen) = server(vec![Answer::Status(500); 10]).await;
    quick()
        .started(&ping(&format!("{base}/p")), "nightly")
        .await;
    assert_eq!(seen.lock().unwrap().len(), 3);
}

/// 429 is retried, after the server's Retry-After; a Retry-After past the total bound ends
/// the retries instead of stretching them.
#[tokio::test]
async fn too_many_requests_waits_as_told_within_the_bound() {
    let (base, seen) = server(vec![Answer::SlowDown]).await;
    let t0 = Instant::now();
    quick()
        .started(&ping(&format!("{base}/p")), "nightly")
        .await;
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(seen.lock().unwrap().len(), 2);

    let (base, seen) = server(vec![Answer::SlowDown]).await;
    let tight = Notifier::with_retry(RetryPolicy {
        attempts: 3,
        backoff: Duration::from_millis(20),
        total: Duration::from_millis(1500),
    });
    let t0 = Instant::now();
    tight.started(&ping(&format!("{base}/p")), "nightly").await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A receiver that never answers: each attempt's timeout is cut to what is left of the total,
/// so the whole stays within it.
#[tokio::test]
async fn a_receiver_that_never_answers_costs_at_most_the_total() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let bounded = Notifier::with_retry(RetryPolicy {
        attempts: 5,
        backoff: Duration::from_millis(20),
        total: Duration::from_secs(2),
    });
    let t0 = Instant::now();
    bounded
        .started(&ping(&format!("{base}/p")), "nightly")
        .await;
    let took = t0.elapsed();
    assert!(took <= Duration::from_millis(2300), "{took:?}");
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "{took:?}"
    );
}
