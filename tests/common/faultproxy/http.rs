//! The fault proxy's HTTP/1.1 framing: message heads, and bodies copied by `Content-Length`,
//! chunked encoding or until the connection closes.

use std::io;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Body, Sink, Stop};

/// The longest message head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A connection with a read buffer.
pub(super) struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads more bytes into the buffer; 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.drain(..self.start);
        self.start = 0;
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        let read = self.stream.read(&mut self.buf[len..]).await;
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        read
    }

    /// The next message head (up to and including the empty line), or `None` when the peer
    /// closed the connection between messages.
    pub async fn read_head(&mut self) -> Result<Option<Vec<u8>>, Stop> {
        loop {
            if let Some(end) = find(self.pending(), b"\r\n\r\n") {
                let head = self.pending()[..end + 4].to_vec();
                self.start += end + 4;
                return Ok(Some(head));
            }
            if self.pending().len() > MAX_HEAD {
                return Err(invalid("message head too long").into());
            }
            if self.fill().await? == 0 {
                return if self.pending().is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
                };
            }
        }
    }

    /// One line, `\r\n` included.
    async fn read_line(&mut self) -> Result<Vec<u8>, Stop> {
        loop {
            if let Some(end) = find(self.pending(), b"\r\n") {
                let line = self.pending()[..end + 2].to_vec();
                self.start += end + 2;
                return Ok(line);
            }
            if self.pending().len() > MAX_HEAD {
                return Err(invalid("line too long").into());
            }
            if self.fill().await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Copies exactly `n` bytes to `sink`.
    async fn copy_exact(&mut self, mut n: u64, sink: &mut Sink<'_>) -> Result<(), Stop> {
        while n > 0 {
            if self.pending().is_empty() && self.fill().await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            let take = (self.pending().len() as u64).min(n) as usize;
            let result = sink.write(&self.pending()[..take]).await;
            self.start += take;
            n -= take as u64;
            result?;
        }
        Ok(())
    }

    /// Copies a message body delimited by `body` to `sink`.
    pub async fn copy_body(&mut self, body: Body, sink: &mut Sink<'_>) -> Result<(), Stop> {
        match body {
            Body::Length(n) => self.copy_exact(n, sink).await,
            Body::Chunked => loop {
                let line = self.read_line().await?;
                sink.write(&line).await?;
                let text = String::from_utf8_lossy(&line);
                let size = text.trim().split(';').next().unwrap_or("");
                let size =
                    u64::from_str_radix(size.trim(), 16).map_err(|_| invalid("bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        let trailer = self.read_line().await?;
                        sink.write(&trailer).await?;
                        if trailer == b"\r\n" {
                            return Ok(());
                        }
                    }
                }
                self.copy_exact(size + 2, sink).await?;
            },
            Body::UntilClose => loop {
                if self.pending().is_empty() && self.fill().await? == 0 {
                    return Ok(());
                }
                let len = self.pending().len();
                let result = sink.write(self.pending()).await;
                self.start += len;
                result?;
            },
        }
    }

    /// Waits until the peer closes the connection (reading and dropping whatever it sends).
    pub async fn wait_closed(&mut self) -> Result<(), Stop> {
        let mut buf = vec![0u8; 16 * 1024];
        while self.stream.read(&mut buf).await? > 0 {}
        Ok(())
    }

    /// Resets the connection (RST, not FIN) as it is dropped.
    pub fn reset(&self) -> Result<(), Stop> {
        self.stream.set_zero_linger()?;
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Header lines of a head, after its first line: `(lowercase name, value)`.
fn headers(text: &str) -> impl Iterator<Item = (String, &str)> {
    text.split("\r\n").skip(1).filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        Some((name.trim().to_ascii_lowercase(), value.trim()))
    })
}

/// The body framing a head announces (for a message that has a body).
fn framing(text: &str, default: Body) -> Body {
    let mut length = None;
    for (name, value) in headers(text) {
        if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            return Body::Chunked;
        }
        if name == "content-length" {
            length = value.parse().ok();
        }
    }
    length.map_or(default, Body::Length)
}

fn closes(text: &str, version: &str) -> bool {
    version == "HTTP/1.0"
        || headers(text)
            .any(|(name, value)| name == "connection" && value.eq_ignore_ascii_case("close"))
}

/// What the proxy needs of a request head.
pub(super) struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub range: Option<String>,
    pub if_match: Option<String>,
    pub body: Body,
    pub close: bool,
}

impl Request {
    pub fn parse(head: &[u8]) -> Result<Request, Stop> {
        let text = String::from_utf8_lossy(head);
        let mut first = text.lines().next().unwrap_or("").split(' ');
        let (Some(method), Some(target), Some(version)) =
            (first.next(), first.next(), first.next())
        else {
            return Err(invalid("bad request line").into());
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let header = |wanted: &str| {
            headers(&text)
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.to_string())
        };
        Ok(Request {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            query: query.to_string(),
            range: header("range"),
            if_match: header("if-match"),
            body: framing(&text, Body::Length(0)),
            close: closes(&text, version.trim()),
        })
    }
}

/// What the proxy needs of a response head.
pub(super) struct Response {
    pub body: Body,
    pub close: bool,
    /// A 1xx answer (100 Continue): the real response follows it.
    pub informational: bool,
}

impl Response {
    pub fn parse(head: &[u8], method: &str) -> Result<Response, Stop> {
        let text = String::from_utf8_lossy(head);
        let mut first = text.lines().next().unwrap_or("").split(' ');
        let version = first.next().unwrap_or("").trim().to_string();
        let status: u16 = first
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("bad status line"))?;
        let informational = (100..200).contains(&status) && status != 101;
        let bodiless = informational || method == "HEAD" || status == 204 || status == 304;
        let body = if bodiless {
            Body::Length(0)
        } else {
            framing(&text, Body::UntilClose)
        };
        Ok(Response {
            body,
            close: closes(&text, &version) || matches!(body, Body::UntilClose),
            informational,
        })
    }
}
