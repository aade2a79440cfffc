//! Ratio and single-core speed of pgkeep's block compressors on a file, codec by codec: the
//! numbers behind the compression tables of docs/PERFORMANCE.md.
//!
//!   cargo run --release --example codecs -- FILE [CODEC ...]
//!
//! FILE is typical input (e.g. `pg_dump -Fc -Z0` of the benchmark database); CODECs are
//! `compression =` values (default: gzip:1..6 and zstd:1..9). Each is compressed the way an
//! upload does it — independent 1 MiB blocks (`BlockCompressor`) — on one thread, then
//! decoded with pgkeep's reader. Speeds are MB of input per second of this process's CPU time
//! (user + system, from /proc/self/stat), so that other work on the machine does not skew them
//! as much as it skews wall time.

use std::io::Read;
use std::process::ExitCode;

use pgkeep::codec::{BlockCompressor, Compression};

const BLOCK: usize = 1024 * 1024;

/// CPU seconds used by this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

fn measure(data: &[u8], codec: Compression) -> Result<String, String> {
    let mut compressor = BlockCompressor::new(codec).map_err(|e| e.to_string())?;
    let start = cpu_seconds();
    let mut stored = Vec::with_capacity(data.len() / 2);
    for block in data.chunks(BLOCK) {
        stored.extend_from_slice(&compressor.compress(block).map_err(|e| e.to_string())?);
    }
    let compress = cpu_seconds() - start;
    let start = cpu_seconds();
    let mut decoder = codec.decoder(&stored[..], data.len() as u64);
    let mut buf = vec![0u8; 256 * 1024];
    let mut out_len = 0usize;
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out_len += n,
            Err(e) => return Err(format!("{codec}: decoding failed: {e}")),
        }
    }
    let decode = cpu_seconds() - start;
    if out_len != data.len() {
        return Err(format!(
            "{codec}: decoded {out_len} of {} bytes",
            data.len()
        ));
    }
    let mb = data.len() as f64 / 1e6;
    Ok(format!(
        "| {codec} | {:.3} | {:.1} | {:.0} | {:.0} |",
        data.len() as f64 / stored.len() as f64,
        stored.len() as f64 / 1e6,
        mb / compress.max(0.01),
        mb / decode.max(0.01),
    ))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: codecs FILE [CODEC ...]");
        return ExitCode::from(2);
    };
    let mut codecs: Vec<String> = args.collect();
    if codecs.is_empty() {
        codecs = (1..=6)
            .map(|l| format!("gzip:{l}"))
            .chain((1..=9).map(|l| format!("zstd:{l}")))
            .collect();
    }
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{path}: {:.1} MB, 1 MiB blocks, one thread",
        data.len() as f64 / 1e6
    );
    println!("| codec | ratio | stored (MB) | compress MB/s (CPU) | decode MB/s (CPU) |");
    println!("|---|---:|---:|---:|---:|");
    for spec in codecs {
        let codec = match spec.parse::<Compression>() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        match measure(&data, codec) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
