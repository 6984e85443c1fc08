//! What `guests/kit` hands every guest agrees with the host, and the kit works outside this
//! repository: `refacen guests new` crates build on their own and pass `guests check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use refacen_imaging::align::CANONICAL;

use crate::support::{refacen, repo};

/// kit's canonical template is a copy of the host's, so that a model declaring it gets the
/// host's normalized faces as they are (no second warp): the copy must be the very same
/// f32 values, in the host's landmark order.
#[test]
fn kit_canonical_template_is_the_hosts() {
    let kit = kit::canonical_template();
    assert_eq!((kit.width, kit.height), (CANONICAL.width, CANONICAL.height), "template size");
    let l = &kit.landmarks;
    let kit_points = [
        ("left eye", l.left_eye),
        ("right eye", l.right_eye),
        ("nose", l.nose),
        ("mouth left", l.mouth_left),
        ("mouth right", l.mouth_right),
    ];
    for ((name, point), [x, y]) in kit_points.into_iter().zip(CANONICAL.landmarks) {
        assert_eq!(
            (point.x.to_bits(), point.y.to_bits()),
            (x.to_bits(), y.to_bits()),
            "{name}: kit has ({}, {}), the host ({x}, {y})",
            point.x,
            point.y
        );
    }
}

/// The files under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    files.sort();
    files
}

/// The kit carries its own copy of the WIT, so that a guest outside this repository builds
/// with it; the copy must be the contract the host implements, byte for byte.
#[test]
fn the_kit_vendors_the_wit_byte_for_byte() {
    let (wit, vendored) = (repo().join("wit"), repo().join("guests/kit/wit"));
    let files = files_under(&wit);
    assert!(files.iter().any(|f| f.ends_with("refacen.wit")), "{files:?}");
    assert_eq!(
        files,
        files_under(&vendored),
        "guests/kit/wit holds other files than wit/: copy wit/ over it"
    );
    for file in files {
        let (a, b) = (std::fs::read(wit.join(&file)).unwrap(), std::fs::read(vendored.join(&file)).unwrap());
        assert!(
            a == b,
            "guests/kit/wit/{} differs from wit/{0}: copy wit/ over guests/kit/wit",
            file.display()
        );
    }
}

/// `cargo build --release` in `dir`, its artifacts in `target`: offline when the registry
/// cache has what it needs (CI's setup fetched the guests' dependencies), else online.
fn cargo_build(dir: &Path, target: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = |offline: bool| {
        let mut command = Command::new(&cargo);
        command.current_dir(dir).args(["build", "--release", "--quiet"]).env("CARGO_TARGET_DIR", target);
        if offline {
            command.arg("--offline");
        }
        command.output().expect("cargo runs")
    };
    let output = build(true);
    if output.status.success() {
        return;
    }
    let output = build(false);
    assert!(
        output.status.success(),
        "cargo build --release in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `refacen guests new` writes crates that build with one `cargo build --release`, depend on
/// nothing in this repository, and pass `refacen guests check` as they are.
#[test]
fn new_guests_build_and_pass_the_check() {
    let dir = tempfile::tempdir().unwrap();
    // One target directory for both, kept in target/: reruns build incrementally.
    let target = repo().join("target/new-guests");
    for (kind, name) in [("detector", "my-detector"), ("embedder", "my-model")] {
        let crate_dir = dir.path().join(name);
        let out = refacen(&["guests", "new", "--kind", kind, name, &crate_dir.display().to_string()]);
        assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
        assert!(out.stdout.contains("cargo build --release"), "{}", out.stdout);
        let repo_path = repo().display().to_string();
        for file in files_under(&crate_dir) {
            let text = String::from_utf8_lossy(&std::fs::read(crate_dir.join(&file)).unwrap()).into_owned();
            assert!(!text.contains(&repo_path), "{kind}: {} names this repository", file.display());
            if file.ends_with("Cargo.toml") {
                assert!(!text.contains(".."), "{kind}: {} reaches outside the crate", file.display());
            }
        }
        cargo_build(&crate_dir, &target);
        let wasm = target.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
        let out = refacen(&["guests", "check", "--json", &wasm.display().to_string()]);
        let report: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("{kind}: {e}: {}{}", out.stdout, out.stderr));
        assert_eq!(out.code, 0, "{kind}: {report:#}");
        assert_eq!(report["name"], name);
        println!("guest kit: the new {kind} passes the check with {} warning(s)", report["warnings"]);
    }
    // A second `new` into a directory that is not empty writes nothing.
    let crate_dir = dir.path().join("my-model");
    let out = refacen(&["guests", "new", "--kind", "embedder", "other", &crate_dir.display().to_string()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);
}
