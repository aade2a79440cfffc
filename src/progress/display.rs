//! Drawing the progress line on stderr: redrawn in place (`\r`, erase line) four times a
//! second by a thread of its own, erased before each log line and drawn again after it, and
//! erased when the command ends. Only when stderr is a terminal (`--progress auto`, the
//! default) or when asked (`always`); piped output and logs stay exactly as without it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// When to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Never,
    Auto,
    Always,
}

const TICK: Duration = Duration::from_millis(250);
const ERASE: &[u8] = b"\r\x1b[2K";

/// What is on the terminal's last line, shared by the drawing thread and the log writer.
struct Screen {
    line: String,
}

fn screen() -> &'static OnceLock<Mutex<Screen>> {
    static SCREEN: OnceLock<Mutex<Screen>> = OnceLock::new();
    &SCREEN
}

/// Draws until dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts drawing when `mode` says so; `None` otherwise.
pub fn start(mode: Mode) -> Option<Display> {
    let on = match mode {
        Mode::Never => false,
        Mode::Auto => std::io::stderr().is_terminal(),
        Mode::Always => true,
    };
    if !on {
        return None;
    }
    let _ = screen().set(Mutex::new(Screen {
        line: String::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || draw_until(&stopping))
        .ok()?;
    Some(Display {
        stop,
        thread: Some(thread),
    })
}

fn draw_until(stop: &AtomicBool) {
    let started = Instant::now();
    let mut last = (Instant::now(), super::get().snapshot().bytes_done);
    let mut rate = 0.0f64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let snap = super::get().snapshot();
        let (at, bytes) = last;
        let secs = at.elapsed().as_secs_f64();
        if secs >= 1.0 {
            let now = snap.bytes_done.saturating_sub(bytes) as f64 / secs;
            // A moving average over a few seconds, so the time left does not jump around.
            rate = if rate == 0.0 {
                now
            } else {
                0.7 * rate + 0.3 * now
            };
            last = (Instant::now(), snap.bytes_done);
        }
        if snap.phase.is_empty() && snap.bytes_done == 0 {
            continue;
        }
        let line = super::line(&snap, started.elapsed(), rate);
        if let Some(screen) = screen().get() {
            let mut s = screen.lock().unwrap_or_else(PoisonError::into_inner);
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(ERASE);
            let _ = err.write_all(line.as_bytes());
            let _ = err.flush();
            s.line = line;
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(screen) = screen().get() {
            let mut s = screen.lock().unwrap_or_else(PoisonError::into_inner);
            if !s.line.is_empty() {
                let _ = std::io::stderr().write_all(ERASE);
                s.line.clear();
            }
        }
    }
}

/// A writer whose output goes above the progress line: each write erases the line first (on
/// stderr, where it is drawn) and draws it again after. Without a progress line it is `W`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Above<W>(pub W);

impl<W: Write> Write for Above<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(screen) = screen().get() else {
            return self.0.write(buf);
        };
        let s = screen.lock().unwrap_or_else(PoisonError::into_inner);
        if s.line.is_empty() {
            return self.0.write(buf);
        }
        let mut err = std::io::stderr().lock();
        err.write_all(ERASE)?;
        err.flush()?;
        self.0.write_all(buf)?;
        self.0.flush()?;
        err.write_all(s.line.as_bytes())?;
        err.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// stderr for the log, above the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Above(std::io::stderr()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}
