//! zstd (RFC 8878) for stored objects: independent frames compressed whole by libzstd, and a
//! streaming reader whose memory is bounded by the window it accepts.

use std::io::{self, Read};

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer};

/// The default zstd level, libzstd's default too: see docs/PERFORMANCE.md for the measurements.
pub const DEFAULT_ZSTD_LEVEL: u32 = 3;
/// The highest level pgkeep writes: levels 20–22 ("--ultra") need windows of up to 128 MiB.
pub const MAX_ZSTD_LEVEL: u32 = 19;
/// log2 of the largest window a reader accepts, 8 MiB: what every level up to 19 uses when the
/// zstd CLI writes without `--long`. A decoder holds one window of decoded data, so this bounds
/// its memory whatever a damaged or hostile frame header asks for.
pub const MAX_WINDOW_LOG: u32 = 23;
const MAX_WINDOW: u64 = 1 << MAX_WINDOW_LOG;

/// Compresses independent blocks of a stream, each into one complete zstd frame.
///
/// A series of frames is an ordinary zstd stream (RFC 8878 §3.1: `zstd -dc` and every libzstd
/// reader decode frame after frame), so blocks can be compressed on several threads at once.
/// Each frame records its content size (so its window is never larger than its block) and an
/// xxHash64 checksum of its content, checked by every decoder.
pub struct ZstdFrame {
    cctx: CCtx<'static>,
    /// Sized for libzstd's worst case; frames are copied out at their real size.
    scratch: Vec<u8>,
}

impl ZstdFrame {
    /// A compressor at `level`, clamped to 1..=19.
    ///
    /// # Errors
    /// When libzstd cannot allocate a context or refuses a parameter.
    pub fn new(level: u32) -> io::Result<Self> {
        let level = level.clamp(1, MAX_ZSTD_LEVEL) as i32;
        let mut cctx = CCtx::try_create()
            .ok_or_else(|| io::Error::other("zstd could not allocate a compression context"))?;
        for param in [
            CParameter::CompressionLevel(level),
            CParameter::ChecksumFlag(true),
            CParameter::ContentSizeFlag(true),
        ] {
            cctx.set_parameter(param).map_err(zstd_error)?;
        }
        Ok(ZstdFrame {
            cctx,
            scratch: Vec::new(),
        })
    }

    /// `data` as one zstd frame.
    ///
    /// # Errors
    /// Only if libzstd fails, which it does not for an output buffer of `compress_bound`.
    pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.scratch.clear();
        self.scratch.reserve(zstd_safe::compress_bound(data.len()));
        let n = self
            .cctx
            .compress2(&mut self.scratch, data)
            .map_err(zstd_error)?;
        Ok(self.scratch[..n].to_vec())
    }
}

fn zstd_error(code: zstd_safe::ErrorCode) -> io::Error {
    io::Error::other(format!(
        "zstd compression failed: {}",
        zstd_safe::get_error_name(code)
    ))
}

/// The longest frame header (RFC 8878 §3.1.1): magic, descriptor, window, dictionary id, size.
const MAX_HEADER: usize = 4 + 1 + 1 + 4 + 8;
const FRAME_MAGIC: u32 = 0xFD2F_B528;

/// What a frame header says about the memory needed to decode it.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    /// A zstd frame needing a window of this many bytes.
    Frame { window: u64 },
    /// A skippable frame, or bytes that are no zstd frame at all (libzstd says which).
    Other,
    /// More bytes are needed to tell.
    Short,
}

/// Reads the window size a frame header asks for (RFC 8878 §3.1.1.1): the window descriptor,
/// or, in a single-segment frame, the content size.
fn frame_header(b: &[u8]) -> Header {
    if b.len() < 6 {
        return Header::Short;
    }
    if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != FRAME_MAGIC {
        return Header::Other;
    }
    let descriptor = b[4];
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let exponent = u64::from(b[5] >> 3);
        let mantissa = u64::from(b[5] & 7);
        let base = 1u64 << (10 + exponent);
        return Header::Frame {
            window: base + base / 8 * mantissa,
        };
    }
    let dict_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let size_len = [1, 2, 4, 8][usize::from(descriptor >> 6)];
    let at = 5 + dict_len;
    let Some(field) = b.get(at..at + size_len) else {
        return Header::Short;
    };
    let mut le = [0u8; 8];
    le[..size_len].copy_from_slice(field);
    let size = u64::from_le_bytes(le) + if size_len == 2 { 256 } else { 0 };
    Header::Frame { window: size }
}

/// Decodes a zstd stream (any number of frames) with memory bounded by `MAX_WINDOW_LOG`: a
/// frame asking for a larger window is refused before anything is allocated for it. A stream
/// that ends inside a frame, or holds no frame at all, is an error, never short data.
pub(super) struct ZstdReader<R> {
    inner: R,
    dctx: Option<DCtx<'static>>,
    input: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// The next input byte starts a frame (libzstd reported the previous one complete).
    at_frame: bool,
    frames: u64,
}

impl<R: Read> ZstdReader<R> {
    pub(super) fn new(inner: R) -> Self {
        ZstdReader {
            inner,
            dctx: None,
            input: vec![0; DCtx::in_size().max(MAX_HEADER)],
            start: 0,
            end: 0,
            eof: false,
            at_frame: true,
            frames: 0,
        }
    }

    /// Reads more input, keeping what is unread: `false` at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.input.len() {
            return Ok(true); // full already: nothing to read into (and no end of stream)
        }
        loop {
            match self.inner.read(&mut self.input[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Checks the header of the frame that starts the unread input.
    fn check_header(&mut self) -> io::Result<()> {
        loop {
            match frame_header(&self.input[self.start..self.end]) {
                Header::Frame { window } if window > MAX_WINDOW => {
                    return Err(damaged(&format!(
                        "a frame asks for a {} window, more than the {} pgkeep decodes \
                         (frames written with --long or --ultra are not supported)",
                        crate::human::bytes(window),
                        crate::human::bytes(MAX_WINDOW),
                    )));
                }
                Header::Short if self.fill()? => {}
                // Anything else, a stream that ends inside a header included, is libzstd's
                // to judge.
                Header::Frame { .. } | Header::Other | Header::Short => return Ok(()),
            }
        }
    }

    /// Creates the decoder on first use, with its window capped.
    fn context(&mut self) -> io::Result<()> {
        let mut dctx = DCtx::try_create()
            .ok_or_else(|| io::Error::other("zstd could not allocate a decoder"))?;
        dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
            .map_err(|code| damaged(zstd_safe::get_error_name(code)))?;
        self.dctx = Some(dctx);
        Ok(())
    }
}

fn damaged(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("zstd stream is damaged: {what}"),
    )
}

impl<R: Read> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.start == self.end && !self.fill()? {
                return match (self.at_frame, self.frames) {
                    (true, 0) => Err(damaged("it holds no frame")),
                    (true, _) => Ok(0),
                    (false, _) => Err(damaged("the stream ends inside a frame")),
                };
            }
            if self.at_frame {
                self.check_header()?;
                self.at_frame = false;
            }
            if self.dctx.is_none() {
                self.context()?;
            }
            let dctx = self.dctx.as_mut().expect("created above");
            let mut input = InBuffer::around(&self.input[self.start..self.end]);
            let mut output = OutBuffer::around(&mut *buf);
            let hint = dctx
                .decompress_stream(&mut output, &mut input)
                .map_err(|code| damaged(zstd_safe::get_error_name(code)))?;
            self.start += input.pos();
            if hint == 0 {
                // The frame is complete and flushed; the next byte starts another one.
                self.at_frame = true;
                self.frames += 1;
            }
            if output.pos() > 0 {
                return Ok(output.pos());
            }
        }
    }
}

#[cfg(test)]
#[path = "zstd_tests.rs"]
mod tests;
