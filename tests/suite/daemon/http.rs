//! The daemon's readiness endpoint and its notifications.

use super::*;

/// `/readyz` is 200 while the last success (seeded from the store at start-up) is recent and
/// 503 naming the job once it is older than `max_age`; systemd hears READY, WATCHDOG, STOPPING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_a_job_is_stale() {
    let c = cluster();
    let db = small_db("daemon_stale").await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[jobs.yearly]\ndatabase = \"{}\"\nschedule = \"0 0 0 1 1 *\"\nmax_age = \"3s\"\ncompression = \"gzip:1\"\n",
        store_config(&p),
        c.url(&db)
    ));
    let id = p.backup_ok().await;
    let sock_path = p.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let d = Daemon::start(
        &p,
        s3::free_port(),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .await;
    assert_eq!(d.get("/readyz").await, (200, "ready\n".to_string()));
    let finished = {
        let show = p.run(&["show", &id, "--json"]).await.expect_code(0);
        let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
        chrono::DateTime::parse_from_rfc3339(v["finished_at"].as_str().unwrap()).unwrap()
    };
    let seeded = d
        .metric("pgkeep_backup_last_success_timestamp_seconds{job=\"yearly\"}")
        .await
        .unwrap();
    assert!((seeded - finished.timestamp_millis() as f64 / 1000.0).abs() < 0.01);
    let stale_at = finished + chrono::Duration::milliseconds(3200);
    let wait = (stale_at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    let (code, body) = d.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("job 'yearly'") && body.contains("max age 3s"),
        "{body}"
    );
    assert_eq!(d.get("/healthz").await.0, 200);

    let mut seen = String::new();
    let mut buf = [0u8; 512];
    while !(seen.contains("READY=1") && seen.contains("WATCHDOG=1")) {
        let n = sock.recv(&mut buf).expect("sd_notify datagrams");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    let (code, _, log) = d.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{log}");
    loop {
        let n = sock.recv(&mut buf).expect("STOPPING=1");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
}

/// What the in-test HTTP server received: method, path, body.
pub(super) type Captured = Arc<Mutex<Vec<(String, String, String)>>>;

/// The `[notifications]` table sending webhooks to `/hook` and pings to `/ping/{ping}` of the
/// local server on `port`.
fn notifications(port: u16, ping: &str) -> String {
    format!(
        "\n[notifications]\nwebhook_url = \"http://127.0.0.1:{port}/hook\"\n\
         ping_url = \"http://127.0.0.1:{port}/ping/{ping}\"\n\n"
    )
}

/// The method and path of each request a server recorded, in order.
fn requests(seen: &[(String, String, String)]) -> Vec<(&str, &str)> {
    seen.iter()
        .map(|(m, path, _)| (m.as_str(), path.as_str()))
        .collect()
}

/// A tiny HTTP server answering 200 to everything and recording each request.
pub(super) async fn capture_server() -> (u16, Captured) {
    scripted_server(Arc::new(|_, _| Some(200))).await
}

/// How a scripted server answers a request, given its path and how many requests for that
/// path came before it: a status, or `None` to close the connection without answering.
type Script = Arc<dyn Fn(&str, usize) -> Option<u16> + Send + Sync>;

/// A tiny HTTP server answering as `script` says and recording each request (those it does
/// not answer included).
async fn scripted_server(script: Script) -> (u16, Captured) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Captured = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start) = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
                    }
                };
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < body_start + length {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[body_start..]).into_owned();
                let mut parts = head.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let status = {
                    let mut seen = seen.lock().unwrap();
                    let before = seen.iter().filter(|(_, p, _)| *p == path).count();
                    seen.push((method, path.clone(), body));
                    script(&path, before)
                };
                let Some(status) = status else {
                    return;
                };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, out)
}

/// Webhooks get a JSON event per run; pings go to URL/start, URL and URL/fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_ping_notifications_are_sent() {
    let c = cluster();
    let db = small_db("daemon_notify").await;
    let (port, seen) = capture_server().await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}{}[jobs.good]\ndatabase = \"{}\"\nschedule = \"*/2 * * * * *\"\ncompression = \"gzip:1\"\n\n\
         [jobs.bad]\ndatabase = \"{}\"\nschedule = \"*/2 * * * * *\"\n\
         [jobs.bad.notifications]\nwebhook_url = \"http://127.0.0.1:{port}/hook\"\nping_url = \"http://127.0.0.1:{port}/ping/bad?rid=7\"\n",
        store_config(&p),
        notifications(port, "global"),
        c.url(&db),
        c.url("no_such_database_to_notify_about")
    ));
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    let has = |method: &str, path: &str, body: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(m, p, b)| m == method && p == path && b.contains(body))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(has("POST", "/ping/global", "committed")
        && has("POST", "/ping/bad/fail?rid=7", "does not exist")
        && has("POST", "/hook", "\"event\":\"failure\""))
    {
        assert!(
            Instant::now() < deadline,
            "notifications missing: {:?}\n{}",
            seen.lock().unwrap(),
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, log) = d.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{log}");
    let seen = seen.lock().unwrap().clone();
    assert!(has("GET", "/ping/global/start", ""), "{seen:?}");
    // `/start` means a backup started: a run that cannot even connect only reports `/fail`.
    assert!(!has("GET", "/ping/bad/start?rid=7", ""), "{seen:?}");
    let events: Vec<serde_json::Value> = seen
        .iter()
        .filter(|(_, path, _)| path == "/hook")
        .map(|(_, _, body)| serde_json::from_str(body).unwrap())
        .collect();
    let good = events
        .iter()
        .find(|e| e["job"] == "good")
        .expect("good's webhook");
    assert_eq!(good["event"], "success");
    let id = good["backup"].as_str().unwrap();
    assert!(committed(&p.store_dir(), "good").contains(&id.to_string()));
    assert!(good["bytes"].as_u64().unwrap() > 1000);
    assert!(good["duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(good["error"].is_null());
    let bad = events
        .iter()
        .find(|e| e["job"] == "bad")
        .expect("bad's webhook");
    assert_eq!(bad["event"], "failure");
    assert!(
        bad["error"].as_str().unwrap().contains("does not exist"),
        "{bad}"
    );
    // Notification URLs carry tokens: logs show only their host.
    assert!(!log.contains("/ping/"), "{log}");
}

/// `pgkeep backup` (a systemd timer, a CronJob) notifies as the daemon's runs do: `/start`,
/// then the success ping and webhook; a run that cannot connect only `/fail` and a failure event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_backups_notify_like_scheduled_ones() {
    let c = cluster();
    let db = small_db("manual_notify").await;
    let (port, seen) = capture_server().await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}{}[jobs.good]\ndatabase = \"{}\"\ncompression = \"gzip:1\"\n\n\
         [jobs.bad]\ndatabase = \"{}\"\n",
        store_config(&p),
        notifications(port, "m"),
        c.url(&db),
        c.url("no_such_database_to_notify_about")
    ));
    let id = p.run(&["backup", "good"]).await.expect_code(0).last_line();
    let bad = p.run(&["backup", "bad"]).await.expect_code(1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        requests(&seen),
        vec![
            ("GET", "/ping/m/start"),
            ("POST", "/hook"),
            ("POST", "/ping/m"),
            ("POST", "/hook"),
            ("POST", "/ping/m/fail"),
        ],
        "{seen:?}"
    );
    let good: serde_json::Value = serde_json::from_str(&seen[1].2).unwrap();
    assert_eq!(good["event"], "success");
    assert_eq!(good["job"], "good");
    assert_eq!(good["backup"], id.as_str());
    assert!(
        seen[2].2.contains(&format!("backup {id} committed")),
        "{seen:?}"
    );
    let failed: serde_json::Value = serde_json::from_str(&seen[3].2).unwrap();
    assert_eq!(failed["event"], "failure");
    assert_eq!(failed["job"], "bad");
    assert!(
        failed["error"].as_str().unwrap().contains("does not exist"),
        "{failed}"
    );
    assert!(seen[4].2.contains("does not exist"), "{}", bad.stderr);
}

/// A blip loses no notification: a `/start` ping whose connection drops and a webhook answered
/// 503 are sent again and arrive; a ping answered 404 (a wrong URL) is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_lost_to_a_blip_are_sent_again() {
    let c = cluster();
    let db = small_db("notify_retry").await;
    let (port, seen) = scripted_server(Arc::new(|path, before| match (path, before) {
        ("/ping/r/start", 0) => None,
        ("/hook", 0) => Some(503),
        ("/ping/r", _) => Some(404),
        _ => Some(200),
    }))
    .await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}{}[jobs.good]\ndatabase = \"{}\"\ncompression = \"gzip:1\"\n",
        store_config(&p),
        notifications(port, "r"),
        c.url(&db),
    ));
    let t0 = Instant::now();
    let run = p.run(&["backup", "good"]).await.expect_code(0);
    let took = t0.elapsed();
    let id = run.last_line();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        requests(&seen),
        vec![
            ("GET", "/ping/r/start"),
            ("GET", "/ping/r/start"),
            ("POST", "/hook"),
            ("POST", "/hook"),
            ("POST", "/ping/r"),
        ],
        "{seen:?}\n{}",
        run.stderr
    );
    let event: serde_json::Value = serde_json::from_str(&seen[3].2).unwrap();
    assert_eq!(event["event"], "success");
    assert_eq!(event["backup"], id.as_str());
    // Two retries, 1 s after each failure: the run is delayed by seconds, not more.
    eprintln!("pgkeep backup with two retried notifications took {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(run.stderr.contains("retrying"), "{}", run.stderr);
    assert!(!run.stderr.contains("/ping/"), "{}", run.stderr);
}
