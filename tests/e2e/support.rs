//! Running the binary, finding fixtures and guests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub use refacen_test_support::repo;

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

/// Each sample photo's person (tests/fixtures/faces/identities.json), by file name.
pub fn identities() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/faces/identities.json"))
        .expect("identities.json");
    serde_json::from_str(&text).expect("identities.json parses")
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
    /// Asserts that refacen refused to run (exit status 2) with an error naming each of
    /// `needles`.
    #[track_caller]
    pub fn assert_refused(&self, needles: &[&str]) {
        assert_eq!(self.code, 2, "stderr: {}", self.stderr);
        for needle in needles {
            assert!(self.stderr.contains(needle), "no `{needle}` in stderr: {}", self.stderr);
        }
    }

    /// stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }
}

thread_local! {
    static UNPRIVILEGED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs `f` with every `refacen` it starts running as user `nobody` when the tests run as
/// root, so file permissions apply (root reads a mode-000 directory). `readable` is opened to
/// others (with its parents up to the temp dir), `writable` is created writable by others.
pub fn as_unprivileged<T>(readable: &Path, writable: &Path, f: impl FnOnce() -> T) -> T {
    if !running_as_root() {
        return f();
    }
    use std::os::unix::fs::PermissionsExt;
    let temp = std::env::temp_dir();
    let mut dir = Some(readable);
    while let Some(d) = dir.filter(|d| d.starts_with(&temp) && *d != temp) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir = d.parent();
    }
    std::fs::create_dir_all(writable).unwrap();
    std::fs::set_permissions(writable, std::fs::Permissions::from_mode(0o777)).unwrap();
    UNPRIVILEGED.set(true);
    let result = f();
    UNPRIVILEGED.set(false);
    result
}

/// Runs `refacen` with the shipped guest directory, a cache inside target/ and its networks on
/// the CPU backend (whatever the environment says: GPU tests ask with [`refacen_env`]).
pub fn refacen<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    refacen_env(args, &[("REFACEN_DEVICE", "cpu")])
}

/// [`refacen`] with `env` set for it.
pub fn refacen_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Output {
    let output = command(args).envs(env.iter().copied()).output().expect("refacen runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A `refacen` command as [`refacen`] runs it (output piped), for tests that start and stop
/// it themselves.
pub fn refacen_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut command = command(args);
    command.env("REFACEN_DEVICE", "cpu").stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// `refacen args` with the shipped guests and the test cache, as `nobody` inside
/// [`as_unprivileged`].
fn command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let unprivileged = UNPRIVILEGED.get();
    let mut command = if unprivileged {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_refacen")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_refacen"))
    };
    command.args(args).env("REFACEN_GUEST_DIR", guest_dir());
    if unprivileged {
        // `nobody` cannot write the shared cache (refacen would compile every guest of the
        // directory afresh, 45 s with the Python and JavaScript ones): it gets its own.
        command
            .env("REFACEN_CACHE_DIR", unprivileged_cache())
            .env("XDG_CACHE_HOME", "/nonexistent")
            .env("HOME", "/nonexistent");
    } else {
        command.env("REFACEN_CACHE_DIR", repo().join("target/test-cache"));
    }
    command
}

/// target/test-cache-nobody: the code cache of `refacen` run as `nobody`, owned by it and
/// writable by it alone, as refacen requires of a cache.
fn unprivileged_cache() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = repo().join("target/test-cache-nobody");
    std::fs::create_dir_all(&dir).expect("create the unprivileged code cache");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown the unprivileged code cache");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .expect("restrict the unprivileged code cache");
    dir
}

/// Faces of one `detect --json` line.
pub fn faces(line: &Value) -> &Vec<Value> {
    line["faces"].as_array().unwrap_or_else(|| panic!("no faces in {line}"))
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// A list of `[x, y]` points.
pub fn points(v: &Value) -> Vec<[f64; 2]> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|p| [p[0].as_f64().expect("x"), p[1].as_f64().expect("y")])
        .collect()
}

/// Runs `refacen detect --json <options>` on `photos` (of tests/fixtures/faces/images) and
/// matches every face of `reference(photo)` (its box under `box_key`) with the face found that
/// overlaps it most: as many faces found as the reference has, each matched with an IoU of 0.9
/// or more. `compare(photo, i, want, found)` then compares each pair. Returns the number of
/// faces compared.
pub fn match_reference_faces<'r>(
    options: &[&str],
    photos: &[&str],
    reference: impl Fn(&str) -> &'r Value,
    box_key: &str,
    mut compare: impl FnMut(&str, usize, &Value, &Value),
) -> usize {
    let mut args: Vec<String> = ["detect", "--json"].iter().chain(options).map(|s| s.to_string()).collect();
    args.extend(photos.iter().map(|p| photo(p)));
    let out = refacen(&args);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.len(), photos.len(), "one line per photo: {}", out.stdout);
    let mut compared = 0;
    for (name, line) in photos.iter().zip(&lines) {
        let ours = faces(line);
        let theirs = reference(name).as_array().expect("reference faces");
        assert_eq!(ours.len(), theirs.len(), "{name} ({options:?}): face count: ours {ours:?}");
        for (i, want) in theirs.iter().enumerate() {
            let want_box = f32s(&want[box_key]);
            let (found, overlap) = ours
                .iter()
                .map(|f| (f, iou(&f32s(&f["bbox"]), &want_box)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .expect("faces");
            assert!(
                overlap >= 0.9,
                "{name} face {i} ({options:?}): IoU {overlap}: {} vs {want_box:?}",
                found["bbox"]
            );
            compare(name, i, want, found);
            compared += 1;
        }
    }
    compared
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

/// A 150x150 face on which `hostile-embedder` does `MODES[mode]` (see its source): a red
/// pixel at (0, 0), then the mode in the red of (1, 0).
pub fn trigger_chip(dir: &Path, mode: u8) -> String {
    let mut chip = image::RgbImage::from_pixel(150, 150, image::Rgb([120, 100, 90]));
    chip.put_pixel(0, 0, image::Rgb([255, 0, 0]));
    chip.put_pixel(1, 0, image::Rgb([mode, 0, 0]));
    let path = dir.join(format!("trigger-{mode}.png"));
    chip.save(&path).unwrap();
    path.display().to_string()
}

/// `refacen embed --model <model> --json --aligned <chips>`: the facen of each chip, by path.
pub fn embed_aligned<'a>(
    model: &str,
    chips: impl IntoIterator<Item = &'a Path>,
) -> HashMap<PathBuf, Vec<f32>> {
    guest(model); // fails with "run `cargo xtask guests`" when missing
    let chips: Vec<String> = chips.into_iter().map(|c| c.display().to_string()).collect();
    let mut args = vec!["embed", "--model", model, "--json", "--aligned"];
    args.extend(chips.iter().map(String::as_str));
    let out = refacen(&args);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.len(), chips.len(), "one line per chip: {}", out.stdout);
    lines
        .iter()
        .map(|line| {
            let image = PathBuf::from(line["image"].as_str().unwrap_or_else(|| panic!("no image in {line}")));
            (image, f32s(&line["facen"]))
        })
        .collect()
}
