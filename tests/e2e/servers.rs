//! Real database servers for the store tests, one set per test: Tarantool (the repo's
//! tarantool/init.lua, see host/tests/support/tarantool_server.rs) and a MongoDB-wire server.
//!
//! mongod cannot be installed from the registries these tests run with, so MongoDB is played
//! by `smongo-wire` (PyPI smongo 1.2.8, a MongoDB wire-protocol server on an embedded engine),
//! which `scripts/stores install` builds into target/stores-venv (`$REFACEN_SMONGO_WIRE`
//! overrides the path). refacen is written to MongoDB's documented semantics, not to this
//! server's; against a real MongoDB the tests' `--mongo` URI is all that changes.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// Shared with host/tests/tarantool.rs, which uses parts these tests do not.
#[allow(dead_code)]
#[path = "../../host/tests/support/tarantool_server.rs"]
mod tarantool_server;

pub use tarantool_server::TarantoolServer;
use tarantool_server::free_port;

use crate::support::repo;

pub struct MongoServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl MongoServer {
    pub fn start() -> MongoServer {
        // On tmpfs where there is one: the server syncs every write, which on disk costs
        // the tests minutes and tests nothing of refacen's.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let mut server = MongoServer { child: None, port: free_port(), dir };
        server.start_again();
        server
    }

    fn bin() -> PathBuf {
        std::env::var_os("REFACEN_SMONGO_WIRE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/stores-venv/bin/smongo-wire"))
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the MongoDB server is already running");
        let bin = Self::bin();
        assert!(
            bin.is_file(),
            "{} is missing: the store tests need a MongoDB-wire server; run `scripts/stores install`",
            bin.display()
        );
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("server log");
        let child = Command::new(&bin)
            .args(["--db-path", &self.dir.path().join("data").display().to_string()])
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the MongoDB server exited with {status}: {}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the MongoDB server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on, for "unreachable" tests.
pub fn closed_port() -> u16 {
    free_port()
}
