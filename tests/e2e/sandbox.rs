//! Misbehaving guests are contained: each failure is reported for its photo, naming the guest
//! and the cause, and the next photo is served by a fresh instance.
//!
//! The `hostile` test guest (guests/testing/hostile) misbehaves in the way its `mode`
//! parameter says, on photos whose top-left pixel is pure red, and behaves on the others.

use serde_json::Value;

use crate::support::{faces, photo, refacen, test_guest, trigger_chip};

fn red_photo(dir: &std::path::Path) -> String {
    let mut image = image::RgbImage::from_pixel(64, 64, image::Rgb([90, 120, 150]));
    image.put_pixel(0, 0, image::Rgb([255, 0, 0]));
    let path = dir.join("trigger.png");
    image.save(&path).unwrap();
    path.display().to_string()
}

/// `detect --json` with the hostile guest in `mode`, one instance, `flags`, over `photos`.
fn detect_hostile(mode: &str, flags: &[&str], photos: &[&str]) -> crate::support::Output {
    let hostile = test_guest("hostile").display().to_string();
    let mode = format!("mode={mode}");
    let mut args = vec!["detect", "--json", "--jobs", "1", "--detector", &hostile, "--param", &mode];
    args.extend(flags);
    args.extend(photos);
    refacen(&args)
}

/// Runs `mode` over [trigger, good, trigger, good] with one instance and returns the lines.
fn run_mode(mode: &str) -> (crate::support::Output, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let red = red_photo(dir.path());
    let good = photo("astronaut.png");
    let limits = ["--guest-timeout-ms", "3000", "--guest-memory-mb", "256"];
    let out = detect_hostile(mode, &limits, &[&red, &good, &red, &good]);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 4, "{}", out.stderr);
    (out, lines)
}

fn assert_contained(mode: &str, expected: &[&str]) {
    let (out, lines) = run_mode(mode);
    assert_eq!(out.code, 1, "{mode}: a failed photo makes the run fail");
    for round in 0..2 {
        let error = lines[round * 2]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{mode}: no error: {}", lines[round * 2]));
        assert!(error.contains("guest `hostile`"), "{mode}: {error}");
        for e in expected {
            assert!(error.contains(e), "{mode}: `{e}` not in: {error}");
        }
        let good = &lines[round * 2 + 1];
        assert_eq!(faces(good).len(), 1, "{mode}: the next photo is processed normally: {good}");
    }
    assert!(out.stderr.contains("4 photo(s), 2 ok, 2 failed"), "{mode}: {}", out.stderr);
}

#[test]
fn an_endless_loop_hits_the_time_limit() {
    assert_contained("loop", &["time limit of 3000 ms", "--guest-timeout-ms"]);
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    assert_contained("alloc", &["over the limit of 256 MiB", "--guest-memory-mb"]);
}

#[test]
fn a_trap_is_reported_with_its_cause() {
    assert_contained("trap", &["trapped", "unreachable"]);
}

#[test]
fn a_panic_is_reported_with_its_message() {
    assert_contained("panic", &["it panicked: hostile guest panics on purpose (at "]);
}

/// The guest reports what it could not do; had it succeeded, it would have returned a face
/// with a "leak marker" score of 1000 or more.
fn assert_denied(mode: &str, expected: &str) {
    let (_, lines) = run_mode(mode);
    for line in &lines {
        for face in line["faces"].as_array().into_iter().flatten() {
            assert!(face["score"].as_f64().unwrap() < 1000.0, "{mode}: the sandbox leaked: {line}");
        }
    }
    let error = lines[0]["error"].as_str().unwrap_or_else(|| panic!("{mode}: {}", lines[0]));
    assert!(error.contains(expected), "{mode}: {error}");
}

#[test]
fn guests_cannot_open_files() {
    assert_denied("open-file", "open-file:");
}

#[test]
fn guests_see_no_environment() {
    assert_denied("read-env", "read-env:");
}

#[test]
fn guests_cannot_open_sockets() {
    assert_denied("socket", "socket:");
}

#[test]
fn guests_see_no_wall_clock() {
    assert_denied("clock", "clock:");
}

#[test]
fn a_fuel_budget_stops_a_guest_deterministically() {
    // A million instructions are enough for `info` but not for MTCNN on a photo: the photo
    // fails on fuel, naming it.
    let out = refacen(&["detect", "--guest-fuel", "1000000", &photo("astronaut.png")]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("used up its fuel of 1000000 per call (--guest-fuel)"), "{}", out.stderr);
    // Too little even to load: the guest is reported with the reason.
    let out = refacen(&["detect", "--guest-fuel", "10", &photo("astronaut.png")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // (Which guests' failures are listed depends on the directory; each names its cause.)
    assert!(
        out.stderr.contains("no detector named `nnd`")
            && out.stderr.contains(".wasm failed to load")
            && out.stderr.contains("used up its fuel of 10 per call"),
        "{}",
        out.stderr
    );
    // An ample budget changes nothing.
    let out = refacen(&["detect", "--json", "--guest-fuel", "100000000000", &photo("astronaut.png")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(faces(&out.json_lines()[0]).len(), 1);
}

#[test]
fn limits_out_of_range_are_refused_before_anything_runs() {
    for args in [
        ["--guest-memory-mb", "0"],
        ["--guest-timeout-ms", "0"],
        ["--guest-fuel", "0"],
        ["--jobs", "0"],
        ["--threads", "0"],
        ["--guest-nn-gflop-per-call", "0"],
        ["--guest-nn-memory-mb", "0"],
        ["--guest-nn-process-mb", "0"],
    ] {
        let out = refacen(&["detect", args[0], args[1], &photo("astronaut.png")]);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(args[0]), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn answers_outside_the_contract_are_refused() {
    assert_contained("many-faces", &["20000 faces in one image (at most 10000)"]);
    assert_contained("nan-face", &["face 0 has a non-finite coordinate or score"]);
    assert_contained("outside", &["lies outside the 64x64 image"]);
    assert_contained("bad-nn", &["not a valid ONNX model"]);
}

#[test]
fn a_huge_answer_is_cut_off() {
    // Ten million faces fit in the default 1 GiB of guest memory; wasmtime's budget for data
    // copied out of a guest stops them before the host allocates them.
    let dir = tempfile::tempdir().unwrap();
    let red = red_photo(dir.path());
    let hostile = test_guest("hostile").display().to_string();
    let out = refacen(&[
        "detect",
        "--json",
        "--detector",
        &hostile,
        "--param",
        "mode=huge-answer",
        &red,
        &photo("astronaut.png"),
    ]);
    let lines = out.json_lines();
    let error = lines[0]["error"].as_str().unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(
        error.contains("guest `hostile`")
            && error.contains("too much data is being copied between the host and the guest"),
        "{error}"
    );
    assert_eq!(faces(&lines[1]).len(), 1, "the next photo is processed: {}", lines[1]);
}

#[test]
fn misbehaving_models_are_contained() {
    let modes: [(&str, &str); 8] = [
        ("nan", "facen 0 has a non-finite value"),
        ("infinity", "facen 0 has a non-finite value"),
        ("wrong-size", "facen 0 has 9 values, the model declares 8"),
        ("extra", "2 facens for 1 faces"),
        ("missing", "0 facens for 1 faces"),
        ("loop", "time limit of 3000 ms"),
        ("alloc", "over the limit of 256 MiB"),
        ("trap", "trapped"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let good = crate::support::repo().join("tests/fixtures/faces/chips/obama_0.png").display().to_string();
    let mut args: Vec<String> = ["embed", "--json", "--guest-timeout-ms", "3000", "--guest-memory-mb", "256"]
        .map(String::from)
        .into();
    args.extend(["--model".into(), test_guest("hostile-embedder").display().to_string(), "--aligned".into()]);
    for (mode, _) in modes.iter().enumerate() {
        args.push(trigger_chip(dir.path(), mode as u8));
        args.push(good.clone());
    }
    let out = refacen(&args);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2 * modes.len(), "{}", out.stderr);
    for (i, (mode, expected)) in modes.iter().enumerate() {
        let error = lines[2 * i]["error"].as_str().unwrap_or_else(|| panic!("{mode}: {}", lines[2 * i]));
        assert!(error.contains("guest `hostile-embedder`") && error.contains(expected), "{mode}: {error}");
        let facen =
            lines[2 * i + 1]["facen"].as_array().unwrap_or_else(|| panic!("{mode}: {}", lines[2 * i + 1]));
        assert_eq!(facen.len(), 8, "{mode}: the face after it is embedded");
    }
}

#[test]
fn untrusted_guests_are_refused_before_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("trusted.txt");
    let nnd = crate::support::guest("nnd");
    let digest = |path: &std::path::Path| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
    };
    std::fs::write(&list, format!("# reviewed\n{}  {}\n", digest(&nnd), nnd.display())).unwrap();
    let list = list.display().to_string();

    let out = refacen(&["detect", "--json", "--trusted-guests", &list, &photo("astronaut.png")]);
    assert_eq!(out.code, 0, "a listed guest runs: {}", out.stderr);
    assert_eq!(faces(&out.json_lines()[0]).len(), 1);

    let hostile = test_guest("hostile");
    let out = refacen(&[
        "detect",
        "--trusted-guests",
        &list,
        "--detector",
        &hostile.display().to_string(),
        &photo("astronaut.png"),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("is not in the trusted-guest list") && out.stderr.contains(&digest(&hostile)),
        "{}",
        out.stderr
    );
    assert!(out.json_lines().is_empty(), "nothing was detected");

    std::fs::write(dir.path().join("bad.txt"), "nnd.wasm\n").unwrap();
    let bad = dir.path().join("bad.txt").display().to_string();
    let out = refacen(&["detect", "--trusted-guests", &bad, &photo("astronaut.png")]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("bad.txt:1") && out.stderr.contains("sha256"), "{}", out.stderr);
}

/// The call's time limit holds inside the work a guest makes the host do: a graph small in
/// memory but huge in work (2000 convolutions; 8 products of 4096² matrices, 137 GFLOP a
/// node) stops soon after the limit, between nodes and inside a node, and fails its photo
/// with the timeout a looping guest gets; the next photo is served. Both ran for minutes
/// before: `--guest-timeout-ms` bounded only the guest's own instructions.
#[test]
fn heavy_host_work_stops_at_the_call_time_limit() {
    use std::time::{Duration, Instant};

    use refacen::face::parse_params;
    use refacen::nn::cpu::CpuBackend;
    use refacen::runtime::{CodeCache, GuestFailure, GuestLimits, GuestRuntime, NnHost, NnLimits};

    let limit = Duration::from_millis(2000);
    let backend: std::sync::Arc<dyn refacen::nn::Backend> = std::sync::Arc::new(CpuBackend::default());
    let nn = std::sync::Arc::new(NnHost::new(backend, NnLimits::default()));
    let limits = GuestLimits { call_timeout: limit, ..GuestLimits::default() };
    let cache = CodeCache::new(Some(crate::support::repo().join("target/test-cache")));
    let runtime = GuestRuntime::new(nn, limits, cache).unwrap();
    let mut detector = runtime.detector(runtime.load(&test_guest("hostile")).unwrap()).unwrap();
    let mut red = image::RgbImage::from_pixel(64, 64, image::Rgb([90, 120, 150]));
    red.put_pixel(0, 0, image::Rgb([255, 0, 0]));
    let good = image::RgbImage::from_pixel(64, 64, image::Rgb([90, 120, 150]));
    for mode in ["heavy-conv", "heavy-matmul"] {
        let params =
            parse_params(&detector.info().params.clone(), &[format!("mode={mode}")], "hostile").unwrap();
        let started = Instant::now();
        let error = detector.detect(&red, &params).expect_err(mode);
        let overrun = started.elapsed().saturating_sub(limit);
        assert!(matches!(error.failure, GuestFailure::Timeout(t) if t == limit), "{mode}: {error}");
        assert!(error.to_string().contains("--guest-timeout-ms"), "{mode}: {error}");
        println!(
            "sandbox: {mode}: the call stopped {} ms after its {} ms limit",
            overrun.as_millis(),
            limit.as_millis()
        );
        // Loose on purpose (tests share 2 cores): before, these calls ran for minutes.
        assert!(
            overrun < Duration::from_millis(1500),
            "{mode}: ran {} ms past the limit",
            overrun.as_millis()
        );
        assert_eq!(detector.detect(&good, &params).unwrap().len(), 1, "{mode}: the next photo is served");
    }
}

/// A compute whose work or memory, estimated from the shapes before it runs, is over the
/// host's ceilings is refused without spending either, naming the graph, the figure and the
/// option; the next photo is served.
#[test]
fn computes_over_the_work_or_memory_ceiling_are_refused_before_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let red = red_photo(dir.path());
    let good = photo("astronaut.png");
    for (mode, flag, value, expected) in [
        ("heavy-conv", "--guest-nn-gflop-per-call", "100", "needs 2415.9 GFLOP"),
        ("heavy-matmul", "--guest-nn-memory-mb", "100", "needs 128 MiB of memory"),
    ] {
        let started = std::time::Instant::now();
        let out = detect_hostile(mode, &[flag, value], &[&red, &good]);
        let lines = out.json_lines();
        assert_eq!(lines.len(), 2, "{}", out.stderr);
        let error = lines[0]["error"].as_str().unwrap_or_else(|| panic!("{mode}: no error: {}", lines[0]));
        for e in ["guest `hostile`", "graph `heavy-", expected, flag] {
            assert!(error.contains(e), "{mode}: `{e}` not in: {error}");
        }
        assert_eq!(lines[0]["cause"], "guest neural-network work limit");
        assert_eq!(faces(&lines[1]).len(), 1, "{mode}: the next photo is served");
        // Refused up front: far less than the minutes the work would take.
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{mode}: {:?}", started.elapsed());
    }
}

/// What a guest holds in the host is capped per instance: graphs (count and bytes) and
/// handles of every kind. A guest that loads ever new graphs is refused the 17th; one that
/// never drops its tensors traps at 4096 handles. Either way the next photo is served.
#[test]
fn an_instance_cannot_hold_graphs_or_handles_without_bound() {
    assert_contained("many-graphs", &["graph 16:", "holds 16 graphs", "drop graphs it no longer uses"]);
    assert_contained("many-tensors", &["4096 wasi-nn handles", "does not drop what it no longer uses"]);
    assert_contained("area-hoard", &["4096 wasi-nn handles", "does not drop what it no longer uses"]);
}

/// Requests to the host's area resampling that it must refuse (an image of the wrong byte
/// length or too large, more levels than handles, an empty level, a level or crops larger
/// than a guest may hold, a region leaving the image) are each refused with its reason,
/// before anything is allocated; the next photo is served.
#[test]
fn area_requests_out_of_bounds_are_refused_and_the_next_photo_is_served() {
    assert_contained(
        "area",
        &[
            "every request was refused",
            "byte length: an image of 64x64 pixels has 12288 bytes of RGB, got 12287",
            "many levels: 5000 levels and a table would bring the guest's wasi-nn handles from 1 past 4096",
            "image size: an image of 4294967295x4294967295 pixels is empty, or its table too large to address",
            "empty level: level 0 is 0x5",
            "huge level: a summed-area table and its levels would take",
            "in the host: the photo is too large for this; detect it at a smaller size (--max-size)",
            "region: region 0 (4294967295, 0, 2x2) is empty or leaves the 64x64 image",
            "huge crops: crops would take 49150 MiB, and this guest may hold only",
        ],
    );
}

/// Sizes a guest crafts to overflow (tensor dimensions whose product overflows, a byte length
/// that wraps to 0, a 2^120-value initializer, Reshape and dilated-Conv shapes that overflow)
/// are each refused with a wasi-nn error, never wrapped into a small size or an abort; the
/// next photo is served.
#[test]
fn sizes_crafted_to_overflow_are_refused_and_the_next_photo_is_served() {
    assert_contained(
        "overflow",
        &[
            "every size was refused",
            "dimensions: compute: invalid argument: input `input`: dimensions [4294967295, 4294967295, \
             4294967295, 4294967295]: too large: tensor shape",
            "byte length: compute: invalid argument: input `input`: dimensions [2147483648, 2147483648]: too \
             large: 4611686018427387904 FP32 values",
            "initializer: load: too large: tensor shape [1099511627776, 1099511627776, 1099511627776] has more \
             elements than fit in memory",
            "reshape: compute: too large: tensor shape [4611686018427387904, 4611686018427387904, 16]",
            "dilated conv: compute: too large: a window of 5 taps dilated 4611686018427387904 over 8 values \
             padded 0+0 overflows",
        ],
    );
}

/// The process-wide ceiling through the command line: a guest keeping 4 MiB tensors fails
/// its photo naming the guest, the figure and the option once all instances hold 16 MiB;
/// the next photo is served.
#[test]
fn what_all_instances_hold_is_capped_for_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let red = red_photo(dir.path());
    let good = photo("astronaut.png");
    let out = detect_hostile("big-tensors", &["--guest-nn-process-mb", "16"], &[&red, &good]);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    let error = lines[0]["error"].as_str().unwrap_or_else(|| panic!("no error: {}", lines[0]));
    for e in ["guest `hostile`", "a tensor of 4 MiB", "to 20 MiB", "limit of 16 MiB", "--guest-nn-process-mb"]
    {
        assert!(error.contains(e), "`{e}` not in: {error}");
    }
    assert_eq!(lines[0]["cause"], "guest neural-network process limit");
    assert_eq!(faces(&lines[1]).len(), 1, "the next photo is served: {}", lines[1]);
    assert_eq!(out.code, 1, "{}", out.stderr);
}
