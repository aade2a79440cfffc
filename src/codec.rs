//! Compression of stored objects: a closed set of codecs (gzip, zstd, or none), with decoders
//! that refuse to produce more than the manifest says was stored.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

mod zstd;

use self::zstd::ZstdReader;
pub use self::zstd::{DEFAULT_ZSTD_LEVEL, MAX_WINDOW_LOG, MAX_ZSTD_LEVEL, ZstdFrame};

/// The default gzip level, zlib's default too. With libdeflate (see `GzipMember`) it stores
/// dump and COPY data about as small as pg_dump's own zlib level 6, at half the CPU.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// How an object's bytes are compressed before they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// gzip (RFC 1952) at a level from 1 to 9.
    Gzip(u32),
    /// zstd (RFC 8878) at a level from 1 to 19.
    Zstd(u32),
}

impl Compression {
    /// The file-name suffix of objects in this codec (`.gz`, `.zst`, or nothing).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip(_) => ".gz",
            Compression::Zstd(_) => ".zst",
        }
    }

    /// The codec's name as written in manifests (`gzip`, `zstd` or `none`), level excluded.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip(_) => "gzip",
            Compression::Zstd(_) => "zstd",
        }
    }

    /// Wraps `inner` in an encoder; call `Encoder::finish` to flush the trailer.
    pub fn encoder<W: Write>(self, inner: W) -> Encoder<W> {
        match self {
            Compression::None => Encoder::None(inner),
            Compression::Gzip(level) => {
                Encoder::Gzip(GzEncoder::new(inner, flate2::Compression::new(level)))
            }
            Compression::Zstd(level) => Encoder::Zstd(zstd_encoder(inner, level)),
        }
    }

    /// Wraps `inner` in a decoder that fails once more than `limit` decoded bytes appear.
    pub fn decoder<'a, R: Read + 'a>(self, inner: R, limit: u64) -> Box<dyn Read + 'a> {
        let decoded: Box<dyn Read + 'a> = match self {
            Compression::None => Box::new(inner),
            Compression::Gzip(_) => Box::new(GzipReader::new(inner)),
            Compression::Zstd(_) => Box::new(ZstdReader::new(inner)),
        };
        Box::new(Capped {
            inner: decoded,
            remaining: limit,
        })
    }

    /// Parses a manifest's codec name; the level is irrelevant for decoding.
    pub fn from_manifest_name(name: &str) -> Option<Compression> {
        match name {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip(DEFAULT_GZIP_LEVEL)),
            "zstd" => Some(Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Gzip(level) => write!(f, "gzip:{level}"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "'{s}' is not a compression; use \"gzip\", \"gzip:1\" to \"gzip:9\", \"zstd\", \
                 \"zstd:1\" to \"zstd:19\", or \"none\""
            )
        };
        let (codec, level) = s.split_once(':').unwrap_or((s, ""));
        let level = || match level.parse::<u32>() {
            // Only plain digits: no sign, no spaces.
            Ok(n) if level.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad()),
        };
        match (codec, s.contains(':')) {
            ("none", false) => Ok(Compression::None),
            ("gzip", false) => Ok(Compression::Gzip(DEFAULT_GZIP_LEVEL)),
            ("zstd", false) => Ok(Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            ("gzip", true) => match level()? {
                n @ 1..=9 => Ok(Compression::Gzip(n)),
                _ => Err(bad()),
            },
            ("zstd", true) => match level()? {
                n @ 1..=MAX_ZSTD_LEVEL => Ok(Compression::Zstd(n)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// A streaming zstd encoder writing one frame with its checksum.
fn zstd_encoder<W: Write>(inner: W, level: u32) -> ::zstd::stream::write::Encoder<'static, W> {
    let level = level.clamp(1, MAX_ZSTD_LEVEL) as i32;
    let mut e = ::zstd::stream::write::Encoder::new(inner, level)
        .expect("libzstd accepts every level from 1 to 19");
    e.include_checksum(true)
        .expect("libzstd accepts the checksum flag");
    e
}

/// A running encoder of one of the codecs.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(GzEncoder<W>),
    Zstd(::zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Flushes everything (the gzip trailer included) and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Compresses one block of a stream into an independent unit of its codec: a gzip member
/// (`GzipMember`) or a zstd frame (`ZstdFrame`). Concatenated in order, the units are an
/// ordinary stream of that codec, so blocks can be compressed on several threads at once.
pub enum BlockCompressor {
    /// `Compression::None`: blocks are stored as they are.
    None,
    Gzip(GzipMember),
    Zstd(ZstdFrame),
}

impl BlockCompressor {
    /// # Errors
    /// When libzstd cannot set up a compression context.
    pub fn new(compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => BlockCompressor::None,
            Compression::Gzip(level) => BlockCompressor::Gzip(GzipMember::new(level)),
            Compression::Zstd(level) => BlockCompressor::Zstd(ZstdFrame::new(level)?),
        })
    }

    /// `data` as one complete member or frame.
    ///
    /// # Errors
    /// When the compressor fails (see `GzipMember::compress`, `ZstdFrame::compress`).
    pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            BlockCompressor::None => Ok(data.to_vec()),
            BlockCompressor::Gzip(g) => g.compress(data),
            BlockCompressor::Zstd(z) => z.compress(data),
        }
    }
}

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
const MEMBER_HEADER_START: [u8; 16] = [
    0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 8, 0, b'P', b'K', 4, 0,
];
const MEMBER_HEADER_LEN: usize = MEMBER_HEADER_START.len() + 4;
/// Members or blocks larger than this are refused as damaged (pgkeep writes 1 MiB blocks).
const MAX_MEMBER: usize = 64 << 20;

/// Reads a gzip stream: members written by `GzipMember` (their length in the header) are
/// decompressed whole by libdeflate, about twice as fast as streaming inflate; from the first
/// member without that length on (other writers, earlier pgkeep versions), the rest of the
/// stream goes through flate2's streaming multi-member decoder.
struct GzipReader<R: Read> {
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
    fn new(inner: R) -> Self {
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

/// Guards against corrupted or hostile objects that decode to far more than was recorded.
struct Capped<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "object decodes to more bytes than its manifest records",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_spelling() {
        assert_eq!("none".parse(), Ok(Compression::None));
        assert_eq!("gzip".parse(), Ok(Compression::Gzip(DEFAULT_GZIP_LEVEL)));
        assert_eq!("gzip:1".parse(), Ok(Compression::Gzip(1)));
        assert_eq!("gzip:9".parse(), Ok(Compression::Gzip(9)));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd(DEFAULT_ZSTD_LEVEL)));
        assert_eq!("zstd:1".parse(), Ok(Compression::Zstd(1)));
        assert_eq!("zstd:19".parse(), Ok(Compression::Zstd(19)));
        for bad in [
            "gzip:0", "gzip:10", "", "gzip:", "zstd:", "zstd:0", "zstd:20", "zstd:22", "zstd:+3",
            "zstd: 3", "gzip:+5", "none:1", "zstd:3:1", "ZSTD", "lz4",
        ] {
            let err = bad.parse::<Compression>().unwrap_err();
            assert!(err.contains("\"zstd:1\" to \"zstd:19\""), "{bad}: {err}");
        }
        // Display is the spelling that parses back.
        for c in [
            Compression::None,
            Compression::Gzip(4),
            Compression::Zstd(12),
        ] {
            assert_eq!(c.to_string().parse(), Ok(c));
        }
        assert_eq!(Compression::Zstd(3).suffix(), ".zst");
        assert_eq!(Compression::Zstd(3).name(), "zstd");
        assert_eq!(
            Compression::from_manifest_name("zstd"),
            Some(Compression::Zstd(DEFAULT_ZSTD_LEVEL))
        );
    }

    #[test]
    fn gzip_members_concatenate_into_one_gzip_stream() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{} row {}\n", i, i % 7).into_bytes())
            .collect();
        let mut member = GzipMember::new(3);
        let mut stored = Vec::new();
        for block in data.chunks(100_000).chain(std::iter::once(&[][..])) {
            stored.extend_from_slice(&member.compress(block).unwrap());
        }
        let mut decoded = Vec::new();
        Compression::Gzip(3)
            .decoder(&stored[..], data.len() as u64)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
        assert!(stored.len() < data.len() / 3, "{} bytes", stored.len());
        // An empty block is still a complete, valid member.
        let out = member.compress(&[]).unwrap();
        let mut empty = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut empty)
            .unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn members_carry_their_length_and_other_gzip_readers_skip_it() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i}\t{}\n", i * 7).into_bytes())
            .collect();
        let mut member = GzipMember::new(6);
        let mut stored = Vec::new();
        for block in data.chunks(65_536) {
            let m = member.compress(block).unwrap();
            assert_eq!(m[..16], MEMBER_HEADER_START);
            assert_eq!(
                u32::from_le_bytes(m[16..20].try_into().unwrap()) as usize,
                m.len()
            );
            stored.extend_from_slice(&m);
        }
        let mut plain = Vec::new();
        MultiGzDecoder::new(&stored[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, data);
        // Members of other writers after pgkeep's: the rest is read by the streaming decoder.
        let mut other = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        other.write_all(b"tail written by zlib\n").unwrap();
        stored.extend_from_slice(&other.finish().unwrap());
        let mut out = Vec::new();
        Compression::Gzip(6)
            .decoder(&stored[..], u64::MAX)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), data.len() + 21);
        assert!(out.ends_with(b"tail written by zlib\n"));
    }

    #[test]
    fn damaged_members_are_errors_not_short_data() {
        // Two different members: a length that swallows the second is caught by its CRC.
        // (Identical members would decode alike; the object's size and SHA-256, checked
        // around every decode, catch that and any other damage to the stored bytes.)
        let mut member = GzipMember::new(6);
        let block = |seed: u32| -> Vec<u8> {
            (0..25_000u32)
                .flat_map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes())
                .map(|b| b % 16 + b'a')
                .collect()
        };
        let good = [
            member.compress(&block(1)).unwrap(),
            member.compress(&block(2)).unwrap(),
        ]
        .concat();
        let decode = |bytes: &[u8]| {
            let mut out = Vec::new();
            Compression::Gzip(6)
                .decoder(bytes, u64::MAX)
                .read_to_end(&mut out)
                .map(|_| out)
        };
        assert_eq!(decode(&good).unwrap().len(), 200_000);
        // Truncated inside the second member.
        let err = decode(&good[..good.len() - 3]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A length that swallows the next member, one that is impossible, a flipped data bit.
        let first = u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
        for (at, value) in [
            (16, u32::try_from(good.len()).unwrap().to_le_bytes()),
            (16, 3u32.to_le_bytes()),
        ] {
            let mut bad = good.clone();
            bad[at..at + 4].copy_from_slice(&value);
            assert!(decode(&bad).is_err(), "length {value:?} accepted");
        }
        let mut bad = good.clone();
        bad[first / 2] ^= 0x10;
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn roundtrips_and_caps() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [
            Compression::None,
            Compression::Gzip(1),
            Compression::Gzip(9),
            Compression::Zstd(1),
            Compression::Zstd(19),
        ] {
            let mut enc = codec.encoder(Vec::new());
            enc.write_all(&data).unwrap();
            let stored = enc.finish().unwrap();
            let mut out = Vec::new();
            codec
                .decoder(&stored[..], data.len() as u64)
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
            let mut short = Vec::new();
            let err = codec
                .decoder(&stored[..], data.len() as u64 - 1)
                .read_to_end(&mut short)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }
}
