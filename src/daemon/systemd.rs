//! systemd's notification protocol (`sd_notify`): `READY=1`, `STATUS=...`, `STOPPING=1` and
//! watchdog pings, as datagrams on the socket named by `$NOTIFY_SOCKET`. A no-op when pgkeep
//! is not started by systemd (or a compatible supervisor).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A connection to the service manager, if there is one.
#[derive(Debug, Clone, Default)]
pub struct Systemd {
    socket: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

impl Systemd {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
    pub fn from_env() -> Systemd {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Systemd::default();
        };
        let addr = match path.to_str().and_then(|p| p.strip_prefix('@')) {
            Some(name) => abstract_addr(name.as_bytes()),
            None => SocketAddr::from_pathname(&path),
        };
        // Non-blocking: a manager that stops reading must not stall the runtime's threads.
        let socket = addr.and_then(|addr| {
            let socket = UnixDatagram::unbound()?;
            socket.set_nonblocking(true)?;
            Ok((socket, addr))
        });
        match socket {
            Ok(pair) => Systemd {
                socket: Some(Arc::new(pair)),
            },
            Err(e) => {
                tracing::warn!(socket = ?path, error = %e, "cannot use NOTIFY_SOCKET");
                Systemd::default()
            }
        }
    }

    /// Sends one notification (`KEY=value` lines); failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        if let Some(pair) = &self.socket {
            let (socket, addr) = &**pair;
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// Pings the watchdog at half of `$WATCHDOG_USEC` when the service has one (and
    /// `$WATCHDOG_PID`, if set, is this process), from a task that lives as long as the runtime
    /// keeps scheduling it: a wedged runtime stops the pings, and systemd restarts pgkeep.
    pub fn spawn_watchdog(&self) -> Option<JoinHandle<()>> {
        let interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )?;
        self.socket.as_ref()?;
        let me = self.clone();
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog enabled"
        );
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                me.notify("WATCHDOG=1");
            }
        }))
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// Half the watchdog timeout, when one is set for this process.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_timeout_for_its_own_pid() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
    }

    #[test]
    fn notifications_arrive_as_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let sd = Systemd {
            socket: Some(Arc::new((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            ))),
        };
        sd.ready("serving");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }
}
