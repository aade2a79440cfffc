//! A cluster of one test's own, for faults that would break every other test sharing the
//! process-wide one: stopping the server in the middle of a run, and starting it again.

use std::process::Command;

use super::Cluster;
use super::start::{StartOutcome, as_owner, server_owner};

impl Cluster {
    /// A new cluster for one test (torn down with the process, like the shared one).
    pub fn private() -> Cluster {
        Cluster::start().unwrap_or_else(|e| panic!("private PostgreSQL cluster: {e}"))
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: sessions are cut off, as when a
    /// server crashes or its host goes away).
    pub fn stop_now(&self) {
        let owner = server_owner().expect("server owner");
        let status = as_owner(
            Command::new(self.bin_dir.join("pg_ctl"))
                .arg("stop")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w"]),
            owner,
        )
        .status()
        .expect("pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed");
    }

    /// Starts the stopped server again on its port.
    pub fn start_again(&self) {
        let owner = server_owner().expect("server owner");
        let dir = self.dir.clone();
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        let outcome = Cluster::start_server(
            &self.bin_dir,
            &dir,
            self.port,
            owner,
            self.tls.then_some((cert.as_path(), key.as_path())),
            &dir.join("server.log"),
            &self.settings.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .expect("restarting the server");
        assert!(
            matches!(outcome, StartOutcome::Ready),
            "port {} was taken meanwhile",
            self.port
        );
    }
}
