//! Block-parallel compression: a stream cut into blocks, each compressed into an independent
//! gzip member or zstd frame on a process-wide pool of threads, written back in input order.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use super::Failure;
use crate::codec::{BlockCompressor, Compression};

/// Input compressed as one gzip member or zstd frame: large enough that the fresh history at
/// each one costs well under 1% of ratio, small enough to spread one stream over several
/// threads.
const BLOCK: usize = 1024 * 1024;
/// Upper bound on the compression threads.
const MAX_COMPRESSION_THREADS: usize = 4;

/// Threads of the process-wide compression pool: enough to outrun pg_dump or the COPY
/// streams, and shared by every upload, so parallel uploads neither oversubscribe the CPU nor
/// multiply the compressors' memory.
fn compression_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_COMPRESSION_THREADS)
}

/// One block to compress, and where its compressed form and its emptied buffer go.
struct Job {
    block: Vec<u8>,
    codec: Compression,
    done: SyncSender<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
}

/// The pool's queue, its threads started on first use. Workers never block on anything but
/// this queue (each job's answer channel has room for its one answer), so no upload can stall
/// another's compression.
fn compression_pool() -> &'static SyncSender<Job> {
    static POOL: OnceLock<SyncSender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = sync_channel::<Job>(1);
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..compression_threads() {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("pgkeep-compress-{n}"))
                .spawn(move || compression_worker(&rx));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start a compression thread");
            }
        }
        tx
    })
}

/// Compresses jobs until the queue closes, keeping its compressor (and its tables) for as long
/// as jobs come in the same codec and level.
fn compression_worker(queue: &Mutex<Receiver<Job>>) {
    let mut current: Option<(Compression, BlockCompressor)> = None;
    loop {
        let job = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let compressed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if current
                .as_ref()
                .is_none_or(|(codec, _)| *codec != job.codec)
            {
                current = None;
                current = Some((job.codec, BlockCompressor::new(job.codec)?));
            }
            let (_, compressor) = current.as_mut().expect("set above");
            compressor.compress(&job.block)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("compression panicked")));
        // A closed receiver means the upload gave up; its own error is reported.
        let _ = job.done.send(compressed);
        let _ = job.spare.try_send(job.block);
    }
}

/// Reads up to one compression block, into `reuse` when given; shorter only at the end of
/// the input.
fn read_block(input: &mut impl Read, reuse: Option<Vec<u8>>) -> io::Result<Vec<u8>> {
    let mut block = reuse.unwrap_or_else(|| Vec::with_capacity(BLOCK));
    block.clear();
    input.take(BLOCK as u64).read_to_end(&mut block)?;
    Ok(block)
}

/// `input` compressed as a series of independent gzip members or zstd frames, one per `BLOCK`
/// of input, compressed on the shared pool (`compression_pool`) and written to `sink` in input
/// order (see `BlockCompressor`). An input of at most one block (most tables, globals,
/// schemas) is compressed inline. Memory stays bounded: per stream, one block being read and
/// `2 * threads + 2` compressed ones awaiting their turn; in the pool, one queued block and one
/// per thread.
pub(super) fn compress_blocks(
    input: &mut impl Read,
    codec: Compression,
    sink: &mut (impl Write + Send),
) -> Result<u64, Failure> {
    type Done = io::Result<Vec<u8>>;
    let first = read_block(input, None).map_err(Failure::Read)?;
    if first.len() < BLOCK {
        let compressed = BlockCompressor::new(codec)
            .and_then(|mut c| c.compress(&first))
            .map_err(Failure::Write)?;
        sink.write_all(&compressed).map_err(Failure::Write)?;
        return Ok(first.len() as u64);
    }
    let pool = compression_pool();
    let threads = compression_threads();
    // Compressed blocks' buffers come back to this reader: a long stream allocates no new ones.
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(2);
    std::thread::scope(|scope| {
        // Blocks are written in input order: the writer waits on each block's own channel.
        let (order_tx, order_rx) = sync_channel::<Receiver<Done>>(2 * threads + 1);
        let writer = scope.spawn(move || -> io::Result<()> {
            for pending in order_rx {
                let member = pending
                    .recv()
                    .map_err(|_| io::Error::other("a compression thread stopped"))??;
                sink.write_all(&member)?;
            }
            Ok(())
        });
        let mut raw = 0u64;
        let mut block = first;
        let read = loop {
            let len = block.len();
            raw += len as u64;
            let (done_tx, done_rx) = sync_channel(1);
            if order_tx.send(done_rx).is_err() {
                break Ok(()); // the writer stopped; its error is the one to report
            }
            let job = Job {
                block,
                codec,
                done: done_tx,
                spare: spare_tx.clone(),
            };
            if pool.send(job).is_err() {
                break Err(io::Error::other("the compression threads are gone"));
            }
            if len < BLOCK {
                break Ok(());
            }
            block = match read_block(input, spare_rx.try_recv().ok()) {
                Ok(b) if b.is_empty() => break Ok(()),
                Ok(b) => b,
                Err(e) => break Err(e),
            };
        };
        drop(order_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the compression writer panicked")));
        read.map_err(Failure::Read)?;
        written.map(|()| raw).map_err(Failure::Write)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_for_test() -> Vec<u8> {
        (0..700_000u32)
            .flat_map(|i| format!("{i}\tname {}\n", i % 13).into_bytes())
            .collect()
    }

    /// Decodes with the codec's reference reader (flate2, the zstd crate), not pgkeep's own.
    fn reference_decode(codec: Compression, stored: &[u8]) -> Vec<u8> {
        let mut decoded = Vec::new();
        match codec {
            Compression::Gzip(_) => flate2::read::MultiGzDecoder::new(stored)
                .read_to_end(&mut decoded)
                .map(drop),
            Compression::Zstd(_) => zstd::stream::read::Decoder::new(stored)
                .and_then(|mut d| d.read_to_end(&mut decoded))
                .map(drop),
            Compression::None => {
                decoded = stored.to_vec();
                Ok(())
            }
        }
        .unwrap();
        decoded
    }

    #[test]
    fn parallel_streams_of_several_codecs_keep_block_order() {
        let data = data_for_test();
        assert!(data.len() > 5 * BLOCK);
        // Streams of different codecs and levels share the pool at once: each comes out whole,
        // in order, and in its own codec.
        let codecs = [
            Compression::Gzip(6),
            Compression::Zstd(3),
            Compression::Gzip(1),
            Compression::Zstd(19),
        ];
        let streams: Vec<_> = codecs
            .into_iter()
            .map(|codec| {
                std::thread::spawn(move || {
                    let mut stored = Vec::new();
                    let raw = compress_blocks(&mut &data_for_test()[..], codec, &mut stored);
                    (codec, raw, stored)
                })
            })
            .collect();
        for stream in streams {
            let (codec, raw, stored) = stream.join().unwrap();
            assert_eq!(raw.ok(), Some(data.len() as u64), "{codec}");
            let magic: &[u8] = match codec {
                Compression::Zstd(_) => &[0x28, 0xb5, 0x2f, 0xfd],
                _ => &[0x1f, 0x8b],
            };
            assert!(stored.starts_with(magic), "{codec}");
            assert!(
                stored.len() < data.len() / 4,
                "{codec}: {} bytes",
                stored.len()
            );
            assert!(
                reference_decode(codec, &stored) == data,
                "{codec}: data differs"
            );
        }
    }

    #[test]
    fn a_short_input_is_one_unit_and_an_empty_one_still_decodes() {
        for codec in [Compression::Gzip(6), Compression::Zstd(3)] {
            for input in [&b""[..], b"one line\n"] {
                let mut stored = Vec::new();
                let raw = compress_blocks(&mut &input[..], codec, &mut stored);
                assert_eq!(raw.ok(), Some(input.len() as u64));
                assert!(
                    !stored.is_empty(),
                    "{codec}: an empty input is still one unit"
                );
                assert_eq!(reference_decode(codec, &stored), input, "{codec}");
            }
        }
    }

    #[test]
    fn parallel_compression_reports_a_failing_source() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("connection reset"));
                }
                let n = buf.len().min(self.0).min(64 * 1024);
                buf[..n].fill(b'x');
                self.0 -= n;
                Ok(n)
            }
        }
        for codec in [Compression::Gzip(6), Compression::Zstd(3)] {
            let result = compress_blocks(&mut Failing(3 * BLOCK + 10), codec, &mut Vec::new());
            assert!(
                matches!(result, Err(Failure::Read(e)) if e.to_string() == "connection reset"),
                "{codec}"
            );
        }
    }
}
