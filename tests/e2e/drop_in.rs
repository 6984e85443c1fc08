//! Deploying a guest by dropping its `.wasm` file into the guest directory.

use sha2::{Digest, Sha256};

use crate::support::{faces, guest, photo, refacen, test_guest, write};

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn a_copied_detector_is_found_by_its_declared_name_and_by_path() {
    let dir = temp_dir();
    let copy = dir.path().join("my-mtcnn.wasm");
    std::fs::copy(guest("nnd"), &copy).unwrap();
    let guest_dir = dir.path().display().to_string();
    let astronaut = photo("astronaut.png");

    let by_name = refacen(&["detect", "--json", "--guest-dir", &guest_dir, "--detector", "nnd", &astronaut]);
    assert_eq!(by_name.code, 0, "{}", by_name.stderr);
    assert_eq!(faces(&by_name.json_lines()[0]).len(), 1);

    let by_path = refacen(&["detect", "--json", "--detector", &copy.display().to_string(), &astronaut]);
    assert_eq!(by_path.code, 0, "{}", by_path.stderr);
    assert_eq!(by_path.json_lines(), by_name.json_lines());

    let listed = refacen(&["guests", "--json", "--guest-dir", &guest_dir]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let entries = listed.json_lines();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["world"], "detector");
    assert_eq!(entries[0]["name"], "nnd");
    let params: Vec<(&str, f64)> = entries[0]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["default"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        params,
        [
            ("min-face-size", 30.0),
            ("max-face-size", 0.0),
            ("p-net-thresh", 0.5),
            ("r-net-thresh", 0.5),
            ("o-net-thresh", 0.9),
            ("scale-factor", 0.79)
        ]
    );
}

#[test]
fn compiled_code_is_cached_under_the_file_sha256() {
    let cache = temp_dir();
    let nnd = guest("nnd");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refacen"))
        .args(["detect", "--detector", &nnd.display().to_string(), &photo("astronaut.png")])
        .env("REFACEN_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let sha = hex::encode(Sha256::digest(std::fs::read(&nnd).unwrap()));
    let cached: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(cached.iter().any(|f| f.starts_with(&sha) && f.ends_with(".cwasm")), "{cached:?}");
}

#[test]
fn files_that_are_not_detector_components_are_refused_clearly() {
    let dir = temp_dir();
    let astronaut = photo("astronaut.png");
    let cases = [
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec(), "it is a core WebAssembly module"),
        ("junk.wasm", b"definitely not wasm".to_vec(), "no WebAssembly header"),
    ];
    for (name, bytes, expected) in cases {
        let path = write(dir.path(), name, &bytes);
        let out = refacen(&["detect", "--detector", &path, &astronaut]);
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(expected) && out.stderr.contains(name), "{name}: {}", out.stderr);
        assert!(out.stderr.contains("wasm32-wasip2"), "says how to build one: {}", out.stderr);
    }

    let embedder = test_guest("toy-embedder").display().to_string();
    let out = refacen(&["detect", "--detector", &embedder, &astronaut]);
    out.assert_refused(&["is a model (embedder), but a detector is needed"]);

    let out = refacen(&["detect", "--detector", "no-such-detector", &astronaut]);
    out.assert_refused(&["no detector named `no-such-detector`", "available: dlib, nnd"]);
}

#[test]
fn two_guests_declaring_one_name_are_not_guessed_between() {
    let dir = temp_dir();
    std::fs::copy(guest("nnd"), dir.path().join("a.wasm")).unwrap();
    std::fs::copy(guest("nnd"), dir.path().join("b.wasm")).unwrap();
    let out = refacen(&["detect", "--guest-dir", &dir.path().display().to_string(), &photo("astronaut.png")]);
    out.assert_refused(&["declare the detector name `nnd`"]);
}

#[test]
fn broken_files_in_the_guest_directory_are_listed_not_fatal() {
    let dir = temp_dir();
    std::fs::copy(guest("nnd"), dir.path().join("nnd.wasm")).unwrap();
    write(dir.path(), "broken.wasm", b"\0asm\x01\0\0\0");
    let guest_dir = dir.path().display().to_string();
    let listed = refacen(&["guests", "--guest-dir", &guest_dir]);
    assert_eq!(listed.code, 1);
    assert!(listed.stdout.contains("detector nnd") && listed.stdout.contains("broken"), "{}", listed.stdout);
    // The good guest stays usable.
    let out = refacen(&["detect", "--guest-dir", &guest_dir, &photo("astronaut.png")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A guest whose `info` never answers is listed as broken, with the reason, after the info
/// deadline (10 s) rather than the per-call limit (60 s): dropped into the directory, it holds
/// up a lookup of another guest by name only that long.
#[test]
fn a_guest_whose_info_hangs_is_listed_as_broken_and_the_others_stay_usable() {
    let dir = temp_dir();
    std::fs::copy(guest("nnd"), dir.path().join("nnd.wasm")).unwrap();
    std::fs::copy(test_guest("slow-info"), dir.path().join("slow-info.wasm")).unwrap();
    let guest_dir = dir.path().display().to_string();
    let listed = refacen(&["guests", "--guest-dir", &guest_dir]);
    assert_eq!(listed.code, 1, "{}", listed.stderr);
    let told = format!("{}{}", listed.stdout, listed.stderr);
    assert!(listed.stdout.contains("detector nnd"), "{told}");
    assert!(
        told.contains("slow-info.wasm") && told.contains("did not start and answer `info` within 10000 ms"),
        "{told}"
    );
    let out = refacen(&["detect", "--guest-dir", &guest_dir, &photo("astronaut.png")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn no_cache_leaves_the_cache_directory_untouched() {
    let cache = temp_dir();
    let out = refacen(&[
        "detect",
        "--no-cache",
        "--cache-dir",
        &cache.path().display().to_string(),
        &photo("astronaut.png"),
    ]);
    // --no-cache and --cache-dir contradict each other.
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refacen"))
        .args([
            "detect",
            "--no-cache",
            "--detector",
            &guest("nnd").display().to_string(),
            &photo("astronaut.png"),
        ])
        .env("XDG_CACHE_HOME", cache.path())
        .env_remove("REFACEN_CACHE_DIR")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}
