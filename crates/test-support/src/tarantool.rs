//! Real Tarantool instances for tests: `tarantool/init.lua` (or a test's own Lua) on a free
//! loopback port with a fresh work dir, killed when dropped. `restart` SIGKILLs the process and
//! starts it again on the same dir and port, as a crash and a restart by systemd would.
//!
//! The `tarantool` on PATH is used (`$REFACEN_TARANTOOL_BIN` overrides); without one the test
//! fails with what to install rather than being skipped.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_WITHIN: Duration = Duration::from_secs(30);

pub struct TarantoolServer {
    child: Option<Child>,
    script: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

impl TarantoolServer {
    /// The development instance, `tarantool/init.lua`: refacen loaded, guest may use it.
    pub fn start() -> TarantoolServer {
        Self::start_script(tarantool_dir().join("init.lua"), tempfile::tempdir().expect("temp dir"))
    }

    /// An instance running `lua`, which must `box.cfg{listen = os.getenv('REFACEN_TARANTOOL_LISTEN'),
    /// work_dir = os.getenv('REFACEN_TARANTOOL_DIR')}` (listening last, once it is ready).
    pub fn start_lua(lua: &str) -> TarantoolServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("test_init.lua");
        std::fs::write(&script, lua).expect("writing the test's init script");
        Self::start_script(script, dir)
    }

    fn start_script(script: PathBuf, dir: tempfile::TempDir) -> TarantoolServer {
        let port = free_port();
        let mut server = TarantoolServer { child: None, script, port, dir };
        server.start_again();
        server
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, no chance to save anything: what survives is what the WAL holds.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the instance (again) on its dir and port, and waits until it greets on IPROTO.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "tarantool on port {} is already running", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the tarantool log");
        let bin = std::env::var("REFACEN_TARANTOOL_BIN").unwrap_or_else(|_| "tarantool".into());
        let child = Command::new(&bin)
            .arg(&self.script)
            .env("REFACEN_TARANTOOL_LISTEN", self.address())
            .env("REFACEN_TARANTOOL_DIR", self.dir.path())
            .env("REFACEN_TARANTOOL_MEMTX_MB", "512")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {bin} ({e}): the Tarantool tests need Tarantool 2.6 or later \
                     (apt install tarantool, or set REFACEN_TARANTOOL_BIN)"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tarantool.log")
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "tarantool {} exited with {status} while starting; log:\n{}",
                    self.script.display(),
                    self.log()
                );
            }
            if greets(&self.address()) {
                return;
            }
            if started.elapsed() > READY_WITHIN {
                panic!(
                    "tarantool {} not ready within {READY_WITHIN:?}; log:\n{}",
                    self.script.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of the instance's log, for failure messages.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for TarantoolServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tarantool/` of this repository (init.lua, refacen.lua).
pub fn tarantool_dir() -> PathBuf {
    crate::repo().join("tarantool")
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn greets(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut greeting = [0u8; 128];
    stream.read_exact(&mut greeting).is_ok() && greeting.starts_with(b"Tarantool ")
}
