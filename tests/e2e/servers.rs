//! Real database servers for the store tests, one set per test: Tarantool (the repo's
//! tarantool/init.lua, see crates/test-support/src/tarantool.rs) and a MongoDB-wire server.
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

pub use refacen_test_support::tarantool::TarantoolServer;
use refacen_test_support::tarantool::free_port;

use crate::support::repo;

pub struct MongoServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// `smongo-wire`, which refuses every login, or (true) smongo's Rust wire server on the
    /// same engine, which checks the logins clients offer (SCRAM-SHA-256) against the users
    /// created on it, and lets clients that offer none in. It forgets its users when killed.
    checks_logins: bool,
}

/// Runs smongo's Rust wire server: `python server.py DB_PATH HOST PORT`. Its `serve_forever`
/// holds Python's lock, which the server's command handlers need: the script sleeps instead.
const LOGIN_CHECKING_SERVER: &str = "import sys, time\n\
    from smongo.wire import WireServer\n\
    server = WireServer(sys.argv[1], sys.argv[2], int(sys.argv[3]), auth_required=False)\n\
    server.start()\n\
    while True:\n    time.sleep(3600)\n";

impl MongoServer {
    pub fn start() -> MongoServer {
        let mut server = MongoServer::start_stopped();
        server.start_again();
        server
    }

    /// smongo's Rust wire server, which checks logins against the users created on it
    /// (`createUser`).
    pub fn start_checking_logins() -> MongoServer {
        let mut server = MongoServer::start_stopped();
        server.checks_logins = true;
        server.start_again();
        server
    }

    fn start_stopped() -> MongoServer {
        // On tmpfs where there is one: the server syncs every write, which on disk costs
        // the tests minutes and tests nothing of refacen's.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        MongoServer { child: None, port: free_port(), dir, checks_logins: false }
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
        let data = self.dir.path().join("data").display().to_string();
        let mut command = if self.checks_logins {
            let script = self.dir.path().join("server.py");
            std::fs::write(&script, LOGIN_CHECKING_SERVER).expect("server script");
            let mut c = Command::new(bin.with_file_name("python"));
            c.arg(&script).args([data.as_str(), "127.0.0.1", &self.port.to_string()]);
            c
        } else {
            let mut c = Command::new(&bin);
            c.args(["--db-path", &data, "--host", "127.0.0.1", "--port", &self.port.to_string()]);
            c
        };
        let child = command
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

    /// The URI of a user of database `auth_source`.
    pub fn uri_as(&self, user: &str, password: &str, auth_source: &str) -> String {
        format!(
            "mongodb://{user}:{password}@127.0.0.1:{}/?directConnection=true&authSource={auth_source}",
            self.port
        )
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
