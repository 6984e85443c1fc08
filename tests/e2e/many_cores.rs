//! The CPU backend at the core counts operators have. CI has 2 cores, so the pools here are
//! oversubscribed on purpose (`REFACEN_THREADS` up to 64) with up to 16 guest instances at
//! once: at 3+ threads the conv kernel used to find its thread-local buffer already borrowed
//! ("RefCell already borrowed", "a scoped thread panicked") when a worker waiting inside
//! `gemm`'s nested parallelism ran another conv item. Results must equal the 2-thread run's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::regenerate::{Uploads, count};
use crate::support::{Output, f32s, photos, refacen_env};

/// (threads, photos at once): the shapes of 16- and 64-core servers, squeezed onto CI.
const SHAPES: [(&str, &str); 5] = [("3", "1"), ("4", "4"), ("16", "2"), ("16", "16"), ("64", "8")];

fn threads_env(threads: &str) -> [(&'static str, &str); 2] {
    [("REFACEN_DEVICE", "cpu"), ("REFACEN_THREADS", threads)]
}

/// Boxes must be equal (to 1e-3 px) and facens within 1e-5 of the reference's, face by face.
fn assert_same_faces(got: &BTreeMap<u64, Value>, want: &BTreeMap<u64, Value>, what: &str) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: face ids");
    for (id, want) in want {
        let got = &got[id];
        assert_eq!(got["photo"], want["photo"], "{what}: face {id}");
        assert_close(&f32s(&got["bbox"]), &f32s(&want["bbox"]), 1e-3, &format!("{what}: face {id} box"));
        assert_close(
            &f32s(&got["facen"]["values"]),
            &f32s(&want["facen"]["values"]),
            1e-5,
            &format!("{what}: face {id} facen"),
        );
    }
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
    assert!(worst <= tolerance, "{what}: differs by {worst} (tolerance {tolerance})");
}

#[test]
fn regenerate_at_server_core_counts_equals_two_threads() {
    let reference = Uploads::with_copies(2);
    let out = refacen_env(&reference.args(&["--concurrency", "2"]), &threads_env("2"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want = reference.faces();
    assert!(want.len() >= 12, "the sample photos have faces: {}", want.len());
    for (threads, concurrency) in SHAPES {
        let uploads = Uploads::with_copies(2);
        let out = refacen_env(&uploads.args(&["--concurrency", concurrency]), &threads_env(threads));
        let what = format!("regenerate with {threads} threads, {concurrency} workers");
        assert_eq!(out.code, 0, "{what}: {}", out.stderr);
        let summary = out.json_lines().pop().unwrap();
        assert_eq!(count(&summary, "threads").to_string(), threads, "{what}: the summary says the threads");
        assert_eq!(count(&summary, "workers").to_string(), concurrency, "{what}: and the workers");
        assert_same_faces(&uploads.faces(), &want, &what);
    }
}

fn sample_photos() -> Vec<String> {
    let mut photos: Vec<String> =
        std::fs::read_dir(photos()).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    photos.sort();
    photos
}

fn detect(detector: &str, photos: &[String], threads: &str, jobs: &str) -> Output {
    let mut args = vec!["detect".to_string(), "--json".into(), "--jobs".into(), jobs.into()];
    args.extend(["--detector".into(), detector.into()]);
    args.extend(photos.iter().cloned());
    refacen_env(&args, &threads_env(threads))
}

fn assert_same_detections(got: &Output, want: &[Value], what: &str) {
    assert_eq!(got.code, 0, "{what}: {}", got.stderr);
    let got = got.json_lines();
    assert_eq!(got.len(), want.len(), "{what}: one line per photo");
    for (got, want) in got.iter().zip(want) {
        assert_eq!(got["image"], want["image"], "{what}: in input order");
        let (got_faces, want_faces) = (got["faces"].as_array().unwrap(), want["faces"].as_array().unwrap());
        assert_eq!(got_faces.len(), want_faces.len(), "{what}: faces in {}", want["image"]);
        for (g, w) in got_faces.iter().zip(want_faces) {
            assert_close(&f32s(&g["bbox"]), &f32s(&w["bbox"]), 1e-3, &format!("{what}: {}", want["image"]));
            assert_close(
                &points(&g["landmarks"]),
                &points(&w["landmarks"]),
                1e-3,
                &format!("{what}: landmarks"),
            );
        }
    }
}

/// `[[x, y], ...]` flattened.
fn points(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().flat_map(f32s).collect()
}

#[test]
fn detect_at_server_core_counts_equals_two_threads() {
    let photos: Vec<String> = sample_photos().into_iter().cycle().take(12).collect();
    assert_same_detections_at_every_shape("nnd", &photos);
}

/// dlib's MMOD network runs strided convs (the channel kernel's in-place path, which asks
/// for its next input rows ahead) that nnd's networks do not.
#[test]
fn dlib_detect_at_server_core_counts_equals_two_threads() {
    assert_same_detections_at_every_shape("dlib", &sample_photos());
}

/// `detector` finds the same faces at every shape of [`SHAPES`] as at 2 threads and 2 jobs.
fn assert_same_detections_at_every_shape(detector: &str, photos: &[String]) {
    let want = detect(detector, photos, "2", "2");
    assert_eq!(want.code, 0, "{}", want.stderr);
    let want = want.json_lines();
    assert!(want.iter().any(|line| !line["faces"].as_array().unwrap().is_empty()), "{detector} finds faces");
    for (threads, jobs) in SHAPES {
        assert_same_detections(
            &detect(detector, photos, threads, jobs),
            &want,
            &format!("{detector}, {threads} threads, {jobs} jobs"),
        );
    }
}

/// A bad interleaving may need many tries to show: 20 runs of the most oversubscribed shape.
#[test]
fn detect_stress_twenty_runs_at_sixteen_threads() {
    let photos = sample_photos();
    let want = detect("nnd", &photos, "2", "1");
    assert_eq!(want.code, 0, "{}", want.stderr);
    let want = want.json_lines();
    for run in 0..20 {
        assert_same_detections(&detect("nnd", &photos, "16", "8"), &want, &format!("stress run {run}"));
    }
}

#[test]
fn embed_at_server_core_counts_equals_two_threads() {
    // The normalized faces of the sample photos, as regenerate writes them.
    let uploads = Uploads::new();
    let out = refacen_env(&uploads.args(&["--regenerate", "normalized"]), &threads_env("2"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut chips: Vec<PathBuf> = walkdir::WalkDir::new(uploads.files())
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    chips.sort();
    assert!(chips.len() >= 6, "normalized faces: {chips:?}");
    let embed = |threads: &str| {
        let mut args =
            vec!["embed".to_string(), "--json".into(), "--batch-size".into(), "5".into(), "--aligned".into()];
        args.extend(chips.iter().map(|p| p.display().to_string()));
        let out = refacen_env(&args, &threads_env(threads));
        assert_eq!(out.code, 0, "embed with {threads} threads: {}", out.stderr);
        out.json_lines()
    };
    let want = embed("2");
    for threads in ["3", "4", "16", "64"] {
        let got = embed(threads);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g["image"], w["image"]);
            assert_close(&f32s(&g["facen"]), &f32s(&w["facen"]), 1e-5, &format!("embed, {threads} threads"));
        }
    }
}
