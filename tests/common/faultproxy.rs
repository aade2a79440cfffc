//! A fault-injecting HTTP/1.1 proxy for S3 tests: it forwards bytes unchanged between a client
//! (a store in the test, or a pgkeep subprocess) and a real S3 server, and injects faults by rule.
//!
//! Clients sign requests for the proxy's `host:port`; the proxy forwards the `Host` header and
//! everything else unchanged, so SigV4 signatures stay valid. It speaks just enough HTTP/1.1 to
//! find where requests and responses end (`Content-Length`, chunked bodies, HEAD, 1xx), so
//! keep-alive connections carry many requests and faults hit exactly one of them.
//!
//! ```ignore
//! let proxy = FaultProxy::start(target.upstream());
//! proxy.add(Rule::new(Fault::Stall).method("PUT").query("partNumber"));
//! let store = target.via(&proxy.endpoint()).store().await;
//! // ... the store now meets a part upload that is never answered
//! assert_eq!(proxy.injected(), 1);
//! ```
//!
//! The proxy runs on its own runtime (tests come and go with theirs) and stops, dropping every
//! connection, when the `FaultProxy` is dropped.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Active {
    rule: Rule,
    matched: usize,
    injected: usize,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Active>>,
    injected: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl State {
    /// The fault for `request`: the first rule that picks it. Every matching rule counts it.
    fn decide(&self, request: &Request) -> Option<Fault> {
        let mut chosen = None;
        for active in self.rules.lock().unwrap().iter_mut() {
            if !active.rule.matches(request) {
                continue;
            }
            active.matched += 1;
            let allowed = active.rule.limit.is_none_or(|l| active.injected < l);
            if chosen.is_none() && allowed && active.rule.picks(active.matched) {
                active.injected += 1;
                chosen = Some(active.rule.fault);
            }
        }
        if chosen.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        self.seen.lock().unwrap().push(Seen {
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            range: request.range.clone(),
            if_match: request.if_match.clone(),
            fault: chosen,
        });
        chosen
    }
}

/// A running proxy; dropping it stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
}

impl FaultProxy {
    /// A proxy on `127.0.0.1:<free port>` in front of `upstream` (an S3 server's address),
    /// forwarding everything until rules are added.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State::default());
        let (shutdown, stopped) = watch::channel(false);
        let accepting = Arc::clone(&state);
        runtime().spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            let mut stop = stopped.clone();
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                    _ = stop.changed() => return,
                };
                let state = Arc::clone(&accepting);
                let mut stop = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(socket, upstream, state) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        FaultProxy {
            addr,
            state,
            shutdown,
        }
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule after those already there (the first rule that picks a request wins).
    pub fn add(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push(Active {
            rule,
            matched: 0,
            injected: 0,
        });
    }

    /// Removes every rule: from now on everything is forwarded.
    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Faults injected so far, by all rules, cleared ones included.
    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }

    /// Every request seen so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("faultproxy")
            .enable_all()
            .build()
            .expect("fault proxy runtime")
    })
}

/// Serves one client connection: its requests in turn, over one upstream connection.
async fn serve(client: TcpStream, upstream: SocketAddr, state: Arc<State>) -> Result<(), Stop> {
    let _ = client.set_nodelay(true);
    let mut client = Conn::new(client);
    let mut server: Option<Conn> = None;
    loop {
        let Some(head) = client.read_head().await? else {
            return Ok(());
        };
        let request = Request::parse(&head)?;
        let fault = state.decide(&request);
        match fault {
            Some(Fault::Status(status)) => {
                client.copy_body(request.body, &mut Sink::Discard).await?;
                let answer = error_response(status, request.method == "HEAD");
                client.stream.write_all(&answer).await?;
                if request.close {
                    return Ok(());
                }
                continue;
            }
            Some(Fault::Stall) => {
                client.copy_body(request.body, &mut Sink::Discard).await?;
                return client.wait_closed().await;
            }
            _ => {}
        }
        if server.is_none() {
            let stream = TcpStream::connect(upstream).await?;
            let _ = stream.set_nodelay(true);
            server = Some(Conn::new(stream));
        }
        let Some(up) = server.as_mut() else {
            return Ok(());
        };

        let limit = match fault {
            Some(Fault::ResetRequestAfter(n)) => Some(n),
            _ => None,
        };
        let mut to_server = Sink::To {
            stream: &mut up.stream,
            left: limit,
        };
        let mut sent = to_server.write(&head).await;
        if sent.is_ok() {
            sent = client.copy_body(request.body, &mut to_server).await;
        }
        match sent {
            Err(Stop::Cut) => return client.reset(),
            Err(e) => return Err(e),
            Ok(()) if limit.is_some() => return client.reset(),
            Ok(()) => {}
        }

        let (response_head, response) = loop {
            let Some(head) = up.read_head().await? else {
                return Ok(()); // the server closed: so does the client's connection
            };
            let response = Response::parse(&head, &request.method)?;
            if !response.informational {
                break (head, response);
            }
            client.stream.write_all(&head).await?;
        };
        if fault == Some(Fault::DropResponse) {
            up.copy_body(response.body, &mut Sink::Discard).await?;
            return client.reset();
        }
        let limit = match fault {
            Some(
                Fault::ResetResponseAfter(n)
                | Fault::CloseResponseAfter(n)
                | Fault::StallResponseAfter(n),
            ) => Some(n),
            _ => None,
        };
        client.stream.write_all(&response_head).await?;
        let mut to_client = Sink::To {
            stream: &mut client.stream,
            left: limit,
        };
        match up.copy_body(response.body, &mut to_client).await {
            Ok(()) | Err(Stop::Cut) => {}
            Err(e) => return Err(e),
        }
        match fault {
            Some(Fault::ResetResponseAfter(_)) => return client.reset(),
            Some(Fault::CloseResponseAfter(_)) => {
                client.stream.shutdown().await?;
                return Ok(());
            }
            Some(Fault::StallResponseAfter(_)) => return client.wait_closed().await,
            _ => {}
        }
        if response.close || request.close {
            return Ok(());
        }
    }
}

fn error_response(status: u16, head_only: bool) -> Vec<u8> {
    let (code, reason) = match status {
        403 => ("AccessDenied", "Forbidden"),
        500 => ("InternalError", "Internal Server Error"),
        503 => ("ServiceUnavailable", "Service Unavailable"),
        _ => ("InjectedFault", "Injected Fault"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message><RequestId>faultproxy</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nx-amz-request-id: faultproxy\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(&body);
    }
    out.into_bytes()
}

/// Why forwarding stopped: a fault's byte budget ran out, or the connection failed.
enum Stop {
    Cut,
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        Stop::Io(e)
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy)]
enum Body {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Where forwarded bytes go: nowhere, or a socket, with an optional budget.
enum Sink<'a> {
    Discard,
    To {
        stream: &'a mut TcpStream,
        left: Option<usize>,
    },
}

impl Sink<'_> {
    /// Writes `data`, or as much as the budget allows and then `Stop::Cut`.
    async fn write(&mut self, data: &[u8]) -> Result<(), Stop> {
        let Sink::To { stream, left } = self else {
            return Ok(());
        };
        let Some(left) = left else {
            stream.write_all(data).await?;
            return Ok(());
        };
        let take = (*left).min(data.len());
        stream.write_all(&data[..take]).await?;
        *left -= take;
        if take < data.len() {
            Err(Stop::Cut)
        } else {
            Ok(())
        }
    }
}

mod http;
mod rules;

use http::{Conn, Request, Response};
pub use rules::{Fault, Rule, Seen};
