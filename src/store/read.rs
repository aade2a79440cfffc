//! A reader adapter whose errors wrap a `StoreError` naming what was being read, so that a
//! failed read reaches upper layers as "could not read", never as "the bytes are wrong".

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::StoreError;

/// Passes reads through; an error becomes `StoreError::Io { location, source }` wrapped in an
/// `io::Error` of the same kind (see `store_error_of`).
pub(super) struct Located<R> {
    inner: R,
    location: String,
}

impl<R> Located<R> {
    pub(super) fn new(inner: R, location: String) -> Located<R> {
        Located { inner, location }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Located<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if super::store_error_of(&e).is_none() => {
                Poll::Ready(Err(StoreError::Io {
                    location: self.location.clone(),
                    source: e,
                }
                .into_read_error()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Yields a few bytes, then fails.
    struct Failing(bool);

    impl AsyncRead for Failing {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.0 {
                return Poll::Ready(Err(io::Error::from_raw_os_error(5)));
            }
            self.0 = true;
            buf.put_slice(b"abc");
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn errors_wrap_a_store_error_naming_the_location() {
        let mut reader = Located::new(Failing(false), "/srv/backups/job/x".into());
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(out, b"abc");
        match super::super::store_error_of(&err) {
            Some(StoreError::Io { location, source }) => {
                assert_eq!(location, "/srv/backups/job/x");
                assert_eq!(source.raw_os_error(), Some(5));
            }
            other => panic!("expected a wrapped Io error, got {other:?}"),
        }
    }
}
