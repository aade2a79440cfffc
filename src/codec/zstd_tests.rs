use std::io::{Read, Write};
use std::process::{Command, Stdio};

use super::*;
use crate::codec::Compression;

/// COPY-like text: compresses well, but not trivially.
fn rows(n: u32) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                "{i}\tcustomer {}\t{}\n",
                i % 977,
                i.wrapping_mul(2_654_435_761)
            )
        })
        .flat_map(String::into_bytes)
        .collect()
}

/// `data` as pgkeep stores it: one frame per `block` bytes (an empty input is one empty frame).
fn frames(data: &[u8], level: u32, block: usize) -> Vec<u8> {
    let mut frame = ZstdFrame::new(level).unwrap();
    if data.is_empty() {
        return frame.compress(&[]).unwrap();
    }
    data.chunks(block)
        .flat_map(|b| frame.compress(b).unwrap())
        .collect()
}

fn decode(stored: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    Compression::Zstd(3)
        .decoder(stored, u64::MAX)
        .read_to_end(&mut out)
        .map(|_| out)
}

/// Runs the zstd CLI (Debian's `zstd` package, installed by scripts/test-deps.sh) on `input`.
fn zstd_cli(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new("zstd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the zstd CLI is needed (scripts/test-deps.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn frames_round_trip_at_several_levels_and_record_their_size() {
    let data = rows(120_000);
    for level in [1, 3, 9, 19] {
        let stored = frames(&data, level, 1 << 20);
        assert_eq!(decode(&stored).unwrap(), data, "level {level}");
        assert!(
            stored.len() < data.len() / 2,
            "level {level}: {}",
            stored.len()
        );
        // Each frame records its content size, so its window is no larger than its block.
        let mut first = ZstdFrame::new(level).unwrap();
        let one = first.compress(&data[..1 << 20]).unwrap();
        assert_eq!(
            zstd_safe::get_frame_content_size(&one).unwrap(),
            Some(1 << 20)
        );
        assert!(matches!(frame_header(&one), Header::Frame { window } if window <= 1 << 20));
    }
    // The streaming encoder (one frame) decodes the same way.
    for level in [1, 19] {
        let mut e = Compression::Zstd(level).encoder(Vec::new());
        e.write_all(&data).unwrap();
        assert_eq!(decode(&e.finish().unwrap()).unwrap(), data);
    }
    // An empty block is one complete frame of nothing.
    assert_eq!(decode(&frames(b"", 3, 1 << 20)).unwrap(), b"");
}

#[test]
fn the_zstd_cli_reads_concatenated_frames_and_pgkeep_reads_the_cli() {
    let data = rows(150_000);
    let stored = frames(&data, 3, 1 << 20);
    assert!(stored.len() > 3 * 1024, "several frames expected");
    let out = zstd_cli(&["-dc"], &stored);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "zstd -dc decoded something else");
    // `zstd -t` checks every frame's checksum.
    let out = zstd_cli(&["-tq"], &stored);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the CLI writes (one frame, several with multithreading, the highest levels
    // without --long) decodes within the window cap.
    for args in [&["-3", "-c"][..], &["-19", "-c"], &["-3", "-T2", "-c"]] {
        let out = zstd_cli(args, &data);
        assert!(out.status.success(), "{args:?}");
        assert_eq!(decode(&out.stdout).unwrap(), data, "{args:?}");
    }
}

#[test]
fn truncated_or_flipped_streams_are_errors_not_short_data() {
    let data = rows(100_000);
    let stored = frames(&data, 3, 256 * 1024);
    let frame_len = zstd_safe::find_frame_compressed_size(&stored).unwrap();
    // Cut inside the first frame, right after it (a complete, shorter stream is only caught
    // by the manifest's raw size, see copy_verified), inside a later frame, and one byte short.
    for cut in [3, 10, frame_len / 2, frame_len + 2, stored.len() - 1] {
        let err = decode(&stored[..cut]).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidData,
            "cut at {cut}: {err}"
        );
        assert!(
            err.to_string().starts_with("zstd stream is damaged"),
            "{err}"
        );
    }
    // A flipped byte anywhere in the content: the block decoder or the frame's checksum fails.
    for at in [
        frame_len / 3,
        frame_len - 2,
        frame_len + 100,
        stored.len() - 2,
    ] {
        let mut bad = stored.clone();
        bad[at] ^= 0x40;
        let err = decode(&bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "flip at {at}");
    }
    // Nothing, and something that is not zstd at all.
    assert!(decode(b"").unwrap_err().to_string().contains("no frame"));
    assert!(decode(b"\x1f\x8b\x08\x00 not zstd").is_err());
    // Garbage after the last frame.
    let mut tail = stored.clone();
    tail.extend_from_slice(b"trailing");
    assert!(decode(&tail).is_err());
}

/// A frame whose window descriptor asks for `1 << window_log` bytes, holding one raw block.
fn frame_asking_for(window_log: u32, content: &[u8]) -> Vec<u8> {
    let mut f = FRAME_MAGIC.to_le_bytes().to_vec();
    f.push(0); // no content size, not single-segment, no checksum, no dictionary
    f.push(((window_log - 10) << 3) as u8);
    let block = 1 | ((content.len() as u32) << 3); // last block, raw
    f.extend_from_slice(&block.to_le_bytes()[..3]);
    f.extend_from_slice(content);
    f
}

#[test]
fn frames_asking_for_huge_windows_are_refused_before_decoding() {
    // 2 GiB: refused by the header check, naming what was asked for and the cap.
    let hostile = frame_asking_for(31, b"tiny");
    assert_eq!(frame_header(&hostile), Header::Frame { window: 2 << 30 });
    let err = decode(&hostile).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(
        msg.contains("a 2.0 GiB window") && msg.contains("8.0 MiB"),
        "{msg}"
    );
    // 16 MiB is within libzstd's own default limit (128 MiB): the reference decoder accepts
    // it, pgkeep's refuses. And the same frame behind a good one is refused too.
    let sixteen = frame_asking_for(24, b"tiny");
    let mut plain = Vec::new();
    ::zstd::stream::read::Decoder::new(&sixteen[..])
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, b"tiny");
    assert!(
        decode(&sixteen)
            .unwrap_err()
            .to_string()
            .contains("16.0 MiB window")
    );
    let mut behind = frames(b"first frame", 3, 1 << 20);
    behind.extend_from_slice(&sixteen);
    assert!(decode(&behind).is_err());
    // Exactly the cap is accepted.
    assert_eq!(decode(&frame_asking_for(23, b"ok")).unwrap(), b"ok");
    // A real stream with a 16 MiB window, as `zstd --long=24` writes it.
    let data = rows(20_000);
    let mut e = ::zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    e.window_log(24).unwrap();
    e.write_all(&data).unwrap();
    let long = e.finish().unwrap();
    assert!(decode(&long).unwrap_err().to_string().contains("window"));
}

#[test]
fn single_segment_headers_take_the_window_from_the_content_size() {
    // Single-segment with a 1-byte size, then a 2-byte size (which counts from 256), and a
    // 4-byte size after a 1-byte dictionary id.
    let magic = FRAME_MAGIC.to_le_bytes();
    let head = |rest: &[u8]| [&magic[..], rest].concat();
    assert_eq!(
        frame_header(&head(&[0x20, 200])),
        Header::Frame { window: 200 }
    );
    assert_eq!(
        frame_header(&head(&[0x60, 0, 1])),
        Header::Frame { window: 512 }
    );
    assert_eq!(
        frame_header(&head(&[0xa1, 7, 0, 0, 0, 0x40])),
        Header::Frame { window: 1 << 30 }
    );
    assert_eq!(frame_header(&head(&[0xa1, 7, 0])), Header::Short);
    assert_eq!(frame_header(&magic), Header::Short);
    // Skippable frames and other data are left to libzstd.
    assert_eq!(
        frame_header(&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0]),
        Header::Other
    );
}

#[test]
fn skippable_frames_between_frames_are_skipped() {
    let mut stored = frames(b"before\n", 3, 1 << 20);
    stored.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'x', b'y', b'z']);
    stored.extend_from_slice(&frames(b"after\n", 3, 1 << 20));
    assert_eq!(decode(&stored).unwrap(), b"before\nafter\n");
}

#[test]
fn the_reader_decodes_into_small_buffers() {
    let data = rows(30_000);
    let stored = frames(&data, 3, 64 * 1024);
    let mut reader = ZstdReader::new(&stored[..]);
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        match reader.read(&mut buf).unwrap() {
            0 => break,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
    assert!(out == data);
}
