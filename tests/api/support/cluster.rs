//! A PostgreSQL cluster of the test's own (`initdb` on a free port, run as the `postgres` user,
//! since CI runs as root), to stop and start in the middle of a test. Never the shared server.

use std::path::PathBuf;
use std::process::Command;

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn as_postgres(bin: &std::path::Path, program: &str, args: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Cluster {
    /// A new cluster, started; `None` where it cannot be made (not root, no PostgreSQL server
    /// binaries), which fails under `CI`.
    pub fn start() -> Option<Cluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .find(|b| b.join("initdb").exists())
        });
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: no PostgreSQL server binaries for a test cluster"
            );
            eprintln!("note: no PostgreSQL server binaries: skipping a test that stops its own cluster");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("bulletin-pg-")
            .tempdir()
            .expect("cluster dir");
        let chowned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        let data = dir.path().join("data");
        let data = data.to_str().expect("utf-8 path");
        if !chowned
            || !as_postgres(
                &bin,
                "initdb",
                &["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            )
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: cannot initdb a test cluster (run as root)"
            );
            eprintln!("note: cannot initdb a cluster here (not root?): skipping a test that stops its own cluster");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cluster = Cluster { dir, bin, port };
        cluster.up();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// Starts the server and waits until it takes connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = format!("{}/log", self.dir.path().display());
        assert!(
            as_postgres(
                &self.bin,
                "pg_ctl",
                &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]
            ),
            "the test cluster did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast: open sessions are ended) and waits until it is down.
    pub fn down(&self) {
        assert!(
            as_postgres(&self.bin, "pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]),
            "the test cluster did not stop"
        );
    }

    /// `postgres://` URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}
