//! `refacen guests check`: every shipped guest passes it, and every test guest that misbehaves
//! fails it for its own reason, named in the report.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Output, guest_dir, refacen, repo, test_guest, trigger_chip};

/// `refacen guests check --json GUEST args`: the exit status and the report.
fn check(guest: &Path, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["guests", "check", "--json"];
    let guest = guest.display().to_string();
    all.push(&guest);
    all.extend(args);
    let out = refacen(&all);
    let report = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{guest} {args:?}: no JSON report ({e}): {}\n{}", out.stdout, out.stderr));
    (out, report)
}

fn rows<'a>(report: &'a Value, status: &str) -> Vec<&'a Value> {
    report["checks"].as_array().expect("checks").iter().filter(|r| r["status"] == status).collect()
}

fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask guests` first", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    files
}

/// Every guest `cargo xtask guests` ships (and any added to target/guests later) passes, with
/// every kind of check run on it.
#[test]
fn every_shipped_guest_passes() {
    let guests = wasm_files(&guest_dir());
    assert!(guests.len() >= 4, "the shipped guests are missing: run `cargo xtask guests`");
    for guest in guests {
        let (out, report) = check(&guest, &[]);
        let failed: Vec<&Value> = rows(&report, "fail");
        assert_eq!(out.code, 0, "{}: {failed:#?}\n{}", guest.display(), out.stderr);
        assert_eq!(report["passed"], true, "{}", guest.display());
        let checks: Vec<&str> =
            report["checks"].as_array().unwrap().iter().map(|r| r["check"].as_str().unwrap()).collect();
        let call = if report["world"] == "detector" { "detect" } else { "embed" };
        for expected in ["world", "imports", "info", call, "determinism", "time", "memory"] {
            assert!(checks.contains(&expected), "{}: no `{expected}` row: {checks:?}", guest.display());
        }
        if report["world"] == "model" || report["world"] == "embedder" {
            assert!(checks.contains(&"batch"), "{}: {checks:?}", guest.display());
        }
        // The real samples are answered, not refused.
        let answered = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["check"] == call
                    && r["status"] == "pass"
                    && !r["detail"].as_str().unwrap().contains("refused")
            })
            .count();
        assert!(answered >= 6, "{}: {answered} inputs answered", guest.display());
        println!("guest check: {} passed with {} warning(s)", guest.display(), report["warnings"]);
    }
}

/// The table a person reads: one line per check and the verdict.
#[test]
fn the_table_names_each_check_and_the_verdict() {
    let out = refacen(&["guests", "check", "nnd"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for expected in ["detector nnd", "determinism", "param", "min-face-size=27", "bad value", "passed:"] {
        assert!(out.stdout.contains(expected), "`{expected}` not in:\n{}", out.stdout);
    }
}

/// A guest that works within its limits but close to them passes with a warning: nnd's
/// linear memory grows to about 19 MiB on the sample photos (obama3.jpg's 10 MB of RGB and the
/// P-Net maps it reads back; the host makes its pyramid and crops), over half of a 32 MiB
/// limit.
#[test]
fn a_guest_near_its_memory_limit_passes_with_a_warning() {
    let (out, report) = check(&crate::support::guest("nnd"), &["--guest-memory-mb", "32"]);
    assert_eq!(out.code, 0, "within its limits it passes: {:#?}", rows(&report, "fail"));
    let warned = rows(&report, "warn");
    let memory = warned
        .iter()
        .find(|r| r["check"] == "memory")
        .unwrap_or_else(|| panic!("no memory warning: {report:#}"));
    assert_eq!(memory["reason"], "near the memory limit");
    assert!(memory["detail"].as_str().unwrap().contains("of 32 MiB allowed"), "{memory}");
    assert_eq!(report["warnings"], warned.len());
}

/// What each mode of the hostile detector does on its trigger image (a pure red top-left
/// pixel, which the check's pure red probe has), the limits it runs under, and the reason the
/// check must name with a fragment of its detail.
const HOSTILE_MODES: &[(&str, &[&str], &str, &str)] = &[
    ("loop", &["--guest-timeout-ms", "2000"], "guest timeout", "time limit of 2000 ms"),
    ("alloc", &["--guest-memory-mb", "256"], "guest memory limit", "over the limit of 256 MiB"),
    ("trap", &[], "guest trap", "unreachable"),
    ("panic", &[], "guest panic", "hostile guest panics on purpose"),
    ("open-file", &[], "guest internal error", "open-file:"),
    ("read-env", &[], "guest internal error", "read-env:"),
    ("socket", &[], "guest internal error", "socket:"),
    ("clock", &[], "guest internal error", "clock:"),
    ("many-faces", &[], "invalid guest answer", "20000 faces in one image (at most 10000)"),
    ("huge-answer", &[], "guest host-call data limit", "too much data is being copied"),
    ("nan-face", &[], "invalid guest answer", "face 0 has a non-finite coordinate or score"),
    ("outside", &[], "invalid guest answer", "lies outside the 64x64 image"),
    ("bad-nn", &[], "neural-network error", "not a valid ONNX model"),
    (
        "heavy-conv",
        &["--guest-nn-gflop-per-call", "100"],
        "guest neural-network work limit",
        "needs 2415.9 GFLOP",
    ),
    (
        "heavy-matmul",
        &["--guest-nn-memory-mb", "100"],
        "guest neural-network work limit",
        "needs 128 MiB of memory",
    ),
    ("many-graphs", &[], "neural-network error", "holds 16 graphs"),
    ("many-tensors", &[], "guest trap", "4096 wasi-nn handles"),
    (
        "big-tensors",
        &["--guest-nn-process-mb", "16"],
        "guest neural-network process limit",
        "--guest-nn-process-mb",
    ),
    ("overflow", &[], "neural-network error", "every size was refused"),
    ("area", &[], "neural-network error", "every request was refused"),
    ("area-hoard", &[], "guest trap", "4096 wasi-nn handles"),
];

/// The modes the hostile detector declares in its `mode` parameter's help: `name (what it
/// does), ...`.
fn declared_hostile_modes() -> Vec<String> {
    let dir = repo().join("target/test-guests").display().to_string();
    let out = refacen(&["guests", "--json", "--guest-dir", &dir]);
    let hostile = out.json_lines().into_iter().find(|g| g["name"] == "hostile").expect("hostile is listed");
    let params = hostile["params"].as_array().expect("params");
    let help =
        params.iter().find(|p| p["name"] == "mode").expect("a mode parameter")["help"].as_str().unwrap();
    let list = help.split_once(": ").expect("modes after a colon").1;
    list.split(", ")
        .filter_map(|item| item.split_once(" (").map(|(name, _)| name))
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(str::to_string)
        .collect()
}

#[test]
fn each_hostile_detector_mode_fails_for_its_own_reason() {
    let hostile = test_guest("hostile");
    // A mode added to the guest later must be added here, with its reason.
    let declared = declared_hostile_modes();
    assert!(declared.len() > 10, "{declared:?}");
    for mode in declared.iter().filter(|m| *m != "none") {
        assert!(
            HOSTILE_MODES.iter().any(|(m, ..)| m == mode),
            "hostile mode `{mode}` has no expected reason here"
        );
    }
    let (out, report) = check(&hostile, &[]);
    assert_eq!(out.code, 0, "behaving (mode none), it passes: {:#?}", rows(&report, "fail"));
    for (mode, flags, reason, fragment) in HOSTILE_MODES {
        let setting = format!("mode={mode}");
        let mut args = vec!["--param", &setting];
        args.extend(*flags);
        let (out, report) = check(&hostile, &args);
        assert_eq!(out.code, 1, "{mode}: a violation fails the check: {}", out.stderr);
        assert_eq!(report["passed"], false, "{mode}");
        let failed = rows(&report, "fail");
        assert!(!failed.is_empty(), "{mode}: no failing row");
        for row in &failed {
            assert_eq!(row["input"], "pure red 64x64", "{mode}: only the trigger image fails: {row}");
            assert_eq!(row["reason"], *reason, "{mode}: {row}");
            let detail = row["detail"].as_str().unwrap();
            assert!(detail.contains(fragment), "{mode}: `{fragment}` not in {detail}");
        }
        println!("guest check: hostile mode={mode}: {} ({})", reason, failed.len());
    }
}

#[test]
fn each_hostile_model_mode_fails_for_its_own_reason() {
    // In the order of hostile-embedder's MODES; the pure red face of the built-in samples
    // (mode 255, beyond them) gets a NaN.
    let modes: [(&str, &str, &str); 8] = [
        ("nan", "invalid guest answer", "facen 0 has a non-finite value"),
        ("infinity", "invalid guest answer", "facen 0 has a non-finite value"),
        ("wrong-size", "invalid guest answer", "facen 0 has 9 values, the model declares 8"),
        ("extra", "invalid guest answer", "2 facens for 1 faces"),
        ("missing", "invalid guest answer", "0 facens for 1 faces"),
        ("loop", "guest timeout", "time limit of 2000 ms"),
        ("alloc", "guest memory limit", "over the limit of 256 MiB"),
        ("trap", "guest trap", "trapped"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let chips: Vec<String> = (0..modes.len()).map(|i| trigger_chip(dir.path(), i as u8)).collect();
    let mut args = vec!["--guest-timeout-ms", "2000", "--guest-memory-mb", "256"];
    for chip in &chips {
        args.extend(["--sample", chip]);
    }
    let (out, report) = check(&test_guest("hostile-embedder"), &args);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let failed = rows(&report, "fail");
    let embed_row = |input: &str| {
        failed
            .iter()
            .find(|r| r["check"] == "embed" && r["input"] == input)
            .unwrap_or_else(|| panic!("no failing embed row for {input}: {failed:#?}"))
    };
    for ((mode, reason, fragment), chip) in modes.iter().zip(&chips) {
        let row = embed_row(chip);
        assert_eq!(row["reason"], *reason, "{mode}: {row}");
        assert!(row["detail"].as_str().unwrap().contains(fragment), "{mode}: `{fragment}` not in {row}");
    }
    let red = embed_row("pure red face");
    assert!(red["detail"].as_str().unwrap().contains("non-finite"), "{red}");
    // The real faces are embedded.
    let passed = rows(&report, "pass").iter().filter(|r| r["check"] == "embed").count();
    assert!(passed >= 7, "{passed} faces embedded: {report:#}");
}

/// Every test guest is covered above, or passes: one added later must be given its reason.
#[test]
fn every_test_guest_is_covered() {
    // slow-info: drop_in.rs.
    let covered = ["hostile", "hostile-embedder", "slow-info"];
    for guest in wasm_files(&repo().join("target/test-guests")) {
        let name = guest.file_stem().unwrap().to_string_lossy().into_owned();
        if covered.contains(&name.as_str()) {
            continue;
        }
        let (out, report) = check(&guest, &[]);
        assert_eq!(
            out.code,
            0,
            "{name}: a test guest not covered by a test of its own must pass: {:#?}",
            rows(&report, "fail")
        );
    }
}

/// Usage errors are told apart from violations: exit status 2 and what to do.
#[test]
fn bad_usage_is_an_error_not_a_violation() {
    let nnd = crate::support::guest("nnd").display().to_string();
    for (args, expected) in [
        (vec!["guests", "check", &nnd, "--param", "no-such=1"], "has no parameter `no-such`"),
        (vec!["guests", "check", &nnd, "--param", "min-face-size=big"], "takes a number"),
        (vec!["guests", "check", "no-such-guest"], "no detector or model named `no-such-guest`"),
        (vec!["guests", "check", "dlib-resnet-128", "--param", "a=1"], "models take no parameters"),
    ] {
        let out = refacen(&args);
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: `{expected}` not in {}", out.stderr);
    }
    // A file that is no guest is a violation of the contract, reported as such.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let (out, report) = check(&junk, &[]);
    assert_eq!(out.code, 1);
    assert_eq!(rows(&report, "fail")[0]["reason"], "not loadable", "{report}");
}
