//! Compression of stored objects: a closed set of codecs (gzip, zstd, or none), with decoders
//! that refuse to produce more than the manifest says was stored.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use flate2::write::GzEncoder;

mod gzip;
mod zstd;

pub use self::gzip::GzipMember;
use self::gzip::GzipReader;
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
    use super::gzip::MEMBER_HEADER_START;
    use super::*;
    use flate2::read::MultiGzDecoder;

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
