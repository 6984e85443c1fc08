//! Running the binary, finding fixtures and guests.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

pub fn photos() -> PathBuf {
    repo().join("tests/fixtures/faces/images")
}

pub fn photo(name: &str) -> String {
    photos().join(name).display().to_string()
}

pub fn reference() -> Value {
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/faces/reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// The directory `cargo xtask guests` fills with the shipped guests.
pub fn guest_dir() -> PathBuf {
    repo().join("target/guests")
}

fn built(path: PathBuf) -> PathBuf {
    assert!(path.is_file(), "{} is missing: run `cargo xtask guests` first", path.display());
    path
}

/// A shipped guest, e.g. `nnd`.
pub fn guest(name: &str) -> PathBuf {
    built(guest_dir().join(format!("{name}.wasm")))
}

/// A test guest from guests/testing, e.g. `hostile`.
pub fn test_guest(name: &str) -> PathBuf {
    built(repo().join(format!("target/test-guests/{name}.wasm")))
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }
}

/// Runs `refacen` with the shipped guest directory and a cache inside target/.
pub fn refacen<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_refacen"))
        .args(args)
        .env("REFACEN_GUEST_DIR", guest_dir())
        .env("REFACEN_CACHE_DIR", repo().join("target/test-cache"))
        .output()
        .expect("refacen runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Faces of one `detect --json` line.
pub fn faces(line: &Value) -> &Vec<Value> {
    line["faces"].as_array().unwrap_or_else(|| panic!("no faces in {line}"))
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

pub fn iou(a: &[f32], b: &[f32]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

/// Writes `name` in `dir` with `bytes` and returns its path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write fixture");
    path.display().to_string()
}
