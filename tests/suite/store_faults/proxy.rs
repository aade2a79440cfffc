//! The fault proxy itself, against a scripted upstream: bytes forwarded unchanged (chunked and
//! Content-Length bodies, several requests on one kept-alive connection) and rules that pick
//! exactly the requests they describe. The SDK sends only Content-Length bodies today; chunked
//! ones are checked here so that other clients work through the proxy too.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::within;
use crate::common::faultproxy::{Fault, FaultProxy, Rule};

const CHUNKED_PUT: &[u8] = b"PUT /bucket/key?partNumber=1 HTTP/1.1\r\nHost: example\r\n\
Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
const LENGTH_PUT: &[u8] =
    b"PUT /bucket/other HTTP/1.1\r\nHost: example\r\nContent-Length: 3\r\n\r\nxyz";
const RANGED_GET: &[u8] = b"GET /bucket/key HTTP/1.1\r\nHost: example\r\nRange: bytes=5-\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde";

/// An upstream that expects `requests` in turn on one connection, answers each with
/// `RESPONSE`, and returns every byte it received.
fn upstream(requests: &'static [&'static [u8]]) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let listener = TcpListener::from_std(listener).unwrap();
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        for request in requests {
            let mut buf = vec![0u8; request.len()];
            socket.read_exact(&mut buf).await.unwrap();
            received.extend_from_slice(&buf);
            socket.write_all(RESPONSE).await.unwrap();
        }
        received
    });
    (addr, task)
}

/// Sends `request` on `client` and reads one `RESPONSE`-sized answer.
async fn exchange(client: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    client.write_all(request).await.unwrap();
    let mut answer = vec![0u8; RESPONSE.len()];
    client.read_exact(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_forwards_bytes_unchanged_on_one_connection() {
    let (addr, received) = upstream(&[CHUNKED_PUT, LENGTH_PUT, RANGED_GET]);
    let proxy = FaultProxy::start(addr);
    let mut client = TcpStream::connect(proxy.endpoint().trim_start_matches("http://"))
        .await
        .unwrap();
    for request in [CHUNKED_PUT, LENGTH_PUT, RANGED_GET] {
        assert_eq!(
            within("an exchange", exchange(&mut client, request)).await,
            RESPONSE
        );
    }
    let received = within("the upstream", received).await.unwrap();
    assert_eq!(received, [CHUNKED_PUT, LENGTH_PUT, RANGED_GET].concat());
    let seen = proxy.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].query, "partNumber=1");
    assert_eq!(seen[2].range.as_deref(), Some("bytes=5-"));
    assert_eq!(proxy.injected(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_pick_the_requests_they_describe() {
    // The upstream sees only what the rules let through: the second PUT.
    let (addr, received) = upstream(&[LENGTH_PUT]);
    let proxy = FaultProxy::start(addr);
    proxy.add(
        Rule::new(Fault::Status(503))
            .method("PUT")
            .path("/bucket/")
            .nth(1),
    );
    proxy.add(
        Rule::new(Fault::Status(500))
            .method("GET")
            .query("uploadId"),
    );
    let mut client = TcpStream::connect(proxy.endpoint().trim_start_matches("http://"))
        .await
        .unwrap();

    client.write_all(LENGTH_PUT).await.unwrap();
    let mut head = vec![0u8; 12];
    client.read_exact(&mut head).await.unwrap();
    assert_eq!(head, b"HTTP/1.1 503");
    let mut rest = vec![0u8; 4096];
    let n = within("the error body", client.read(&mut rest))
        .await
        .unwrap();
    let rest = String::from_utf8_lossy(&rest[..n]);
    assert!(rest.contains("<Code>ServiceUnavailable</Code>"), "{rest}");

    // The second matching PUT (on a new connection, the first one holds the unread answer
    // body) is forwarded.
    let mut client = TcpStream::connect(proxy.endpoint().trim_start_matches("http://"))
        .await
        .unwrap();
    assert_eq!(
        within("an exchange", exchange(&mut client, LENGTH_PUT)).await,
        RESPONSE
    );
    assert_eq!(within("the upstream", received).await.unwrap(), LENGTH_PUT);
    assert_eq!(proxy.injected(), 1);
    proxy.clear();
    assert_eq!(proxy.injected(), 1, "clearing rules keeps the count");
}

#[test]
fn fractions_are_deterministic_per_seed() {
    let a = Rule::new(Fault::Stall).fraction(0.3, 7);
    let b = Rule::new(Fault::Stall).fraction(0.3, 7);
    assert_eq!(a.longest_run(500), b.longest_run(500));
    assert_eq!(Rule::new(Fault::Stall).longest_run(10), 10);
    assert_eq!(Rule::new(Fault::Stall).nth(3).longest_run(10), 1);
    assert_eq!(Rule::new(Fault::Stall).every(2).longest_run(10), 1);
    assert_eq!(Rule::new(Fault::Stall).fraction(0.0, 1).longest_run(100), 0);
}
