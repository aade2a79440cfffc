//! gzip as pgkeep writes it: independent members compressed by libdeflate on whole blocks,
//! each announcing its length in its header, and the reader that takes such members one at a
//! time (and any other gzip stream through flate2).

use std::io::{self, Read};

use flate2::read::MultiGzDecoder;

/// Compresses independent blocks of a stream, each into one complete gzip member.
///
/// A stream of such members is a valid gzip file (RFC 1952 allows any number of members;
/// `gunzip`, zlib's `gzread` and flate2's `MultiGzDecoder` read them all), and independent
/// members can be compressed on several threads at once. Each member starts with an empty
/// window, which costs well under 1% of ratio at the block sizes used here. libdeflate does the
/// work: on whole buffers it compresses about twice as fast as zlib for the same ratio.
pub struct GzipMember {
    compressor: libdeflater::Compressor,
    /// Sized for libdeflate's worst case; members are copied out at their real size.
    scratch: Vec<u8>,
}

impl GzipMember {
    pub fn new(level: u32) -> Self {
        let level = libdeflater::CompressionLvl::new(level.clamp(1, 9) as i32)
            .unwrap_or_else(|_| libdeflater::CompressionLvl::default());
        GzipMember {
            compressor: libdeflater::Compressor::new(level),
            scratch: Vec::new(),
        }
    }

    /// `data` as one gzip member, its header carrying the member's own length (see
    /// `MEMBER_SUBFIELD`).
    ///
    /// # Errors
    /// Only if the output bound libdeflate promised turns out too small, which it does not, or
    /// for a block over 4 GiB.
    pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        let bound = self.compressor.deflate_compress_bound(data.len());
        if self.scratch.len() < bound {
            self.scratch.resize(bound, 0);
        }
        let n = self
            .compressor
            .deflate_compress(data, &mut self.scratch)
            .map_err(|e| io::Error::other(format!("gzip compression failed: {e:?}")))?;
        let total = u32::try_from(MEMBER_HEADER_LEN + n + 8)
            .map_err(|_| io::Error::other("gzip member over 4 GiB"))?;
        let isize = u32::try_from(data.len()).map_err(|_| io::Error::other("block over 4 GiB"))?;
        let mut member = Vec::with_capacity(total as usize);
        member.extend_from_slice(&MEMBER_HEADER_START);
        member.extend_from_slice(&total.to_le_bytes());
        member.extend_from_slice(&self.scratch[..n]);
        member.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
        member.extend_from_slice(&isize.to_le_bytes());
        Ok(member)
    }
}

/// The gzip header pgkeep writes before each member, up to the member length: magic, deflate,
/// FLG.FEXTRA, no time, XFL 0, OS unknown, then an extra field of 8 bytes holding one subfield,
/// `PK`, of 4 bytes: the whole member's length in bytes, little-endian (like BGZF's `BC`
/// subfield). Readers that do not know it skip it, as RFC 1952 says they must; pgkeep's reader
/// uses it to hand whole members to libdeflate.
pub(super) const MEMBER_HEADER_START: [u8; 16] = [
    0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 8, 0, b'P', b'K', 4, 0,
];
const MEMBER_HEADER_LEN: usize = MEMBER_HEADER_START.len() + 4;
/// Members or blocks larger than this are refused as damaged (pgkeep writes 1 MiB blocks).
const MAX_MEMBER: usize = 64 << 20;

/// Reads a gzip stream: members written by `GzipMember` (their length in the header) are
/// decompressed whole by libdeflate, about twice as fast as streaming inflate; from the first
/// member without that length on (other writers, earlier pgkeep versions), the rest of the
/// stream goes through flate2's streaming multi-member decoder.
pub(super) struct GzipReader<R: Read> {
    inner: Option<R>,
    decompressor: libdeflater::Decompressor,
    member: Vec<u8>,
    out: Vec<u8>,
    /// Decoded bytes of the current member in `out`, and how many of them were read.
    filled: usize,
    pos: usize,
    started: bool,
    fallback: Option<MultiGzDecoder<io::Chain<io::Cursor<Vec<u8>>, R>>>,
}

impl<R: Read> GzipReader<R> {
    pub(super) fn new(inner: R) -> Self {
        GzipReader {
            inner: Some(inner),
            decompressor: libdeflater::Decompressor::new(),
            member: Vec::new(),
            out: Vec::new(),
            filled: 0,
            pos: 0,
            started: false,
            fallback: None,
        }
    }

    /// Decodes the next member into `out`; `false` at the end of the stream or once the
    /// rest is handed to the streaming decoder.
    fn next_member(&mut self) -> io::Result<bool> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(false);
        };
        let mut header = [0u8; MEMBER_HEADER_LEN];
        let got = read_full(inner, &mut header)?;
        let first = !self.started;
        self.started = true;
        if got == 0 && !first {
            return Ok(false);
        }
        if got < MEMBER_HEADER_LEN || header[..MEMBER_HEADER_START.len()] != MEMBER_HEADER_START {
            let inner = self.inner.take().expect("checked above");
            let read = io::Cursor::new(header[..got].to_vec());
            self.fallback = Some(MultiGzDecoder::new(read.chain(inner)));
            return Ok(false);
        }
        let damaged = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("gzip member is damaged: {what}"),
            )
        };
        let total = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
        if !(MEMBER_HEADER_LEN + 9..=MAX_MEMBER).contains(&total) {
            return Err(damaged("impossible member length"));
        }
        self.member.clear();
        self.member.extend_from_slice(&header);
        self.member.resize(total, 0);
        if read_full(inner, &mut self.member[MEMBER_HEADER_LEN..])? != total - MEMBER_HEADER_LEN {
            return Err(damaged("the stream ends inside a member"));
        }
        let tail: [u8; 4] = self.member[total - 4..].try_into().expect("4 bytes");
        let size = u32::from_le_bytes(tail) as usize;
        if size > MAX_MEMBER {
            return Err(damaged("impossible decoded length"));
        }
        if self.out.len() < size {
            self.out.resize(size, 0);
        }
        let n = self
            .decompressor
            .gzip_decompress(&self.member, &mut self.out[..size])
            .map_err(|e| damaged(&format!("{e:?}")))?;
        let crc: [u8; 4] = self.member[total - 8..total - 4]
            .try_into()
            .expect("4 bytes");
        if n != size || libdeflater::crc32(&self.out[..n]) != u32::from_le_bytes(crc) {
            return Err(damaged("its length field does not match its contents"));
        }
        self.filled = n;
        self.pos = 0;
        Ok(true)
    }
}

impl<R: Read> Read for GzipReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(f) = self.fallback.as_mut() {
                return f.read(buf);
            }
            if self.pos < self.filled {
                let n = buf.len().min(self.filled - self.pos);
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.filled = 0;
            self.pos = 0;
            if !self.next_member()? && self.fallback.is_none() {
                return Ok(0);
            }
        }
    }
}

/// Reads until `buf` is full or the stream ends; the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
