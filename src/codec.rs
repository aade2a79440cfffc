//! Compression of stored objects: a closed set of codecs (gzip via flate2, or none),
//! with decoders that refuse to produce more than the manifest says was stored.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

/// The default gzip level, zlib's default too. With libdeflate (see `GzipMember`) it stores
/// dump and COPY data about as small as pg_dump's own zlib level 6, at half the CPU.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// How an object's bytes are compressed before they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// gzip (RFC 1952) at a level from 1 to 9.
    Gzip(u32),
}

impl Compression {
    /// The file-name suffix of objects in this codec (`.gz`, or nothing).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip(_) => ".gz",
        }
    }

    /// The codec's name as written in manifests (`gzip` or `none`), level excluded.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip(_) => "gzip",
        }
    }

    /// Wraps `inner` in an encoder; call `Encoder::finish` to flush the trailer.
    pub fn encoder<W: Write>(self, inner: W) -> Encoder<W> {
        match self {
            Compression::None => Encoder::None(inner),
            Compression::Gzip(level) => {
                Encoder::Gzip(GzEncoder::new(inner, flate2::Compression::new(level)))
            }
        }
    }

    /// Wraps `inner` in a decoder that fails once more than `limit` decoded bytes appear.
    pub fn decoder<'a, R: Read + 'a>(self, inner: R, limit: u64) -> Box<dyn Read + 'a> {
        let decoded: Box<dyn Read + 'a> = match self {
            Compression::None => Box::new(inner),
            Compression::Gzip(_) => Box::new(MultiGzDecoder::new(inner)),
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
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Gzip(level) => write!(f, "gzip:{level}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "'{s}' is not a compression; use \"gzip\", \"gzip:1\" to \"gzip:9\", or \"none\""
            )
        };
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip(DEFAULT_GZIP_LEVEL)),
            _ => {
                let level = s.strip_prefix("gzip:").ok_or_else(bad)?;
                match level.parse::<u32>() {
                    Ok(n @ 1..=9) => Ok(Compression::Gzip(n)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

/// A running encoder of one of the codecs.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(GzEncoder<W>),
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
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
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

    /// `data` as one gzip member.
    ///
    /// # Errors
    /// Only if the output bound libdeflate promised turns out too small, which it does not.
    pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        let bound = self.compressor.gzip_compress_bound(data.len());
        if self.scratch.len() < bound {
            self.scratch.resize(bound, 0);
        }
        let n = self
            .compressor
            .gzip_compress(data, &mut self.scratch)
            .map_err(|e| io::Error::other(format!("gzip compression failed: {e:?}")))?;
        Ok(self.scratch[..n].to_vec())
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
    use super::*;

    #[test]
    fn parses_every_documented_spelling() {
        assert_eq!("none".parse(), Ok(Compression::None));
        assert_eq!("gzip".parse(), Ok(Compression::Gzip(DEFAULT_GZIP_LEVEL)));
        assert_eq!("gzip:1".parse(), Ok(Compression::Gzip(1)));
        assert_eq!("gzip:9".parse(), Ok(Compression::Gzip(9)));
        for bad in ["gzip:0", "gzip:10", "zstd", "", "gzip:"] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
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
    fn roundtrips_and_caps() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [
            Compression::None,
            Compression::Gzip(1),
            Compression::Gzip(9),
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
