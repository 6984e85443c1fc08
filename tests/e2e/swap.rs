//! Swapping the real variants end to end, against real MongoDB-wire and Tarantool servers:
//! regenerate with `nnd` + `dlib-resnet-128`; switch the model to `facenet-512` (facens of 128
//! values become 512) with `--regenerate facens` and `sync-search --activate`; then re-detect
//! with `dlib`. Identities must survive where the new boxes match the old ones, and the faces
//! `dlib` does not find must be reported lost. What to expect is computed from the reference
//! outputs of facenet-pytorch's MTCNN and dlib (the fixtures), not from refacen's own output.
//! Each change is snapshotted and reported, and the reports are rendered in headless Chromium.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::regenerate::{Uploads, count, expected_faces};
use crate::report::{run_chromium, text_of};
use crate::stores::{Stores, strings};
use crate::support::{f32s, iou, refacen, reference, repo};

const FACENET_SPACE: &str = "facens_facenet_512_512";

fn snapshot(uploads: &Uploads, stores: &Stores, out: &Path) {
    let mut args = vec![
        "snapshot".to_string(),
        "--uploads".into(),
        uploads.dir.display().to_string(),
        "--state-dir".into(),
        uploads.state.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(stores.mongo_args());
    let result = refacen(&args);
    assert_eq!(result.code, 0, "{}", result.stderr);
}

fn report(before: &Path, after: &Path, dir: &Path) -> Value {
    let identities = repo().join("tests/fixtures/faces/identities.json");
    let result = refacen(&[
        "report",
        "--before",
        &before.display().to_string(),
        "--after",
        &after.display().to_string(),
        "--out",
        &dir.display().to_string(),
        "--identities",
        &identities.display().to_string(),
    ]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// The photo's file name (records name photos relative to Uploads, some under `2024/`).
fn file_name(photo: &str) -> &str {
    photo.rsplit('/').next().unwrap()
}

/// For each reference MTCNN face (by photo and index), whether one of dlib's reference faces
/// of that photo overlaps it with IoU ≥ 0.5, regenerate's default `--identity-iou`.
fn kept_by_references() -> BTreeMap<(String, usize), bool> {
    let mtcnn = reference();
    let text = std::fs::read_to_string(repo().join("tests/fixtures/dlib/reference.json")).unwrap();
    let dlib: Value = serde_json::from_str(&text).unwrap();
    let mut kept = BTreeMap::new();
    for (photo, faces) in dlib["images"].as_object().unwrap() {
        let dlib_boxes: Vec<Vec<f32>> =
            faces["faces"].as_array().unwrap().iter().map(|f| f32s(&f["full_box"])).collect();
        for (i, face) in mtcnn[photo]["mtcnn_findface"].as_array().unwrap().iter().enumerate() {
            let b = f32s(&face["box"]);
            kept.insert((photo.clone(), i), dlib_boxes.iter().any(|d| iou(&b, d) >= 0.5));
        }
    }
    kept
}

/// Which reference MTCNN face each of refacen's faces is (its box overlaps that one most).
fn reference_face(face: &Value) -> (String, usize) {
    let photo = file_name(face["photo"].as_str().unwrap()).to_string();
    let reference = reference();
    let ours = f32s(&face["bbox"]);
    let (i, _) = reference[&photo]["mtcnn_findface"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, f)| (i, iou(&ours, &f32s(&f["box"]))))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    (photo, i)
}

#[test]
fn model_then_detector_swap_keeps_identities_moves_search_and_is_reported() {
    let stores = Stores::start(1);
    let uploads = Uploads::new();
    let args = stores.both_args();
    let work = tempfile::tempdir().unwrap();
    let snap = |name: &str| work.path().join(name);

    // 1. nnd + dlib-resnet-128 (the defaults).
    let (out, _) = uploads.regenerate(&strings(&args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = stores.faces();
    assert_eq!(first.len(), expected_faces());
    assert!(first.values().all(|f| f["facen"]["values"].as_array().unwrap().len() == 128));
    snapshot(&uploads, &stores, &snap("1-nnd-dlib-resnet.json"));

    // 2. The model switch: facenet-512's facens go to their own space; search moves once
    //    activated.
    let mut facens = args.clone();
    facens.extend(["--regenerate", "facens", "--model", "facenet-512"].map(String::from));
    let (out, summary) = uploads.regenerate(&strings(&facens));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "facens") as usize, expected_faces());
    let second = stores.faces();
    assert_eq!(second.keys().collect::<Vec<_>>(), first.keys().collect::<Vec<_>>(), "same faces, same ids");
    for face in second.values() {
        let values = f32s(&face["facen"]["values"]);
        assert_eq!(values.len(), 512);
        assert_eq!(face["facen"]["model"]["name"], "facenet-512");
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "facenet-512 facens are unit length: {norm}");
    }
    let (code, summary, stderr) = stores.sync(&["--model", "facenet-512", "--activate"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["activated"], true);
    let spaces = stores.spaces();
    assert_eq!(spaces[FACENET_SPACE]["active"], true);
    let (code, nearest, stderr) = stores.search("facenet-512", "obama2.jpg");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(nearest[0]["photo"], "2024/obama2.jpg", "a photo finds its own face first");
    snapshot(&uploads, &stores, &snap("2-facenet.json"));

    // 3. Re-detection with dlib, facens by facenet-512.
    let mut redetect = args.clone();
    redetect.extend(["--detector", "dlib", "--model", "facenet-512"].map(String::from));
    let (out, summary) = uploads.regenerate(&strings(&redetect));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let third = stores.faces();
    let kept_expected = kept_by_references();
    let expect_kept = kept_expected.values().filter(|k| **k).count();
    let expect_lost = kept_expected.len() - expect_kept;
    assert!(expect_kept >= 5 && expect_lost >= 1, "the fixtures exercise both: {kept_expected:?}");
    assert_eq!(count(&summary, "faces_kept") as usize, expect_kept, "{summary}");
    assert_eq!(count(&summary, "faces_lost") as usize, expect_lost, "{summary}");
    for (id, before) in &second {
        let now = &third[id];
        let kept = kept_expected[&reference_face(before)];
        assert_eq!(now["lost"] == false, kept, "face {id} ({}) kept: {kept}", before["photo"]);
        if kept {
            assert_eq!(now["detector"]["name"], "dlib");
            assert_eq!(f32s(&now["facen"]["values"]).len(), 512);
        } else {
            assert_eq!(now["detector"]["name"], "nnd", "a lost face keeps its record as it was");
        }
    }
    let gained: Vec<u64> = third.keys().filter(|id| !second.contains_key(id)).copied().collect();
    assert_eq!(count(&summary, "faces_new") as usize, gained.len());
    // The search store follows: lost faces leave the active space.
    assert_eq!(
        stores.spaces()[FACENET_SPACE]["count"].as_u64().unwrap() as usize,
        third.values().filter(|f| f["lost"] == false).count()
    );
    snapshot(&uploads, &stores, &snap("3-dlib.json"));

    // The reports of both swaps, rendered by a browser.
    let model_report =
        report(&snap("1-nnd-dlib-resnet.json"), &snap("2-facenet.json"), &work.path().join("model"));
    let detector_report =
        report(&snap("2-facenet.json"), &snap("3-dlib.json"), &work.path().join("detector"));
    check_reports(&model_report, &detector_report, &work.path().join("detector/report.html"), expect_lost);
    let artifacts = repo().join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for (name, dir) in [("swap-model", "model"), ("swap-detector", "detector")] {
        let page = work.path().join(dir).join("report.html");
        let shot = artifacts.join(format!("{name}.png"));
        run_chromium(&page, &[&format!("--screenshot={}", shot.display()), "--window-size=1280,2400"]);
        assert!(
            std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
            "{} rendered",
            shot.display()
        );
    }
    let lost_ids: BTreeSet<u64> = second.keys().filter(|id| third[*id]["lost"] == true).copied().collect();
    assert_eq!(lost_ids.len(), expect_lost);
}

/// The reports say what the records said: the model swap kept every face and changed the
/// model of all of them; the detector swap kept and lost what the references predict.
fn check_reports(model: &Value, detector: &Value, detector_page: &Path, expect_lost: usize) {
    let faces = expected_faces() as u64;
    assert_eq!(model["detector"]["kept"], faces, "{}", model["detector"]);
    assert_eq!(model["detector"]["lost"], 0);
    let switch = &model["model"];
    assert_eq!(switch["model_changed"], true);
    assert_eq!(switch["before_model"]["name"], "dlib-resnet-128");
    assert_eq!(switch["after_model"]["name"], "facenet-512");
    assert_eq!(switch["after_model"]["facen_size"], 512);
    assert_eq!(switch["faces"], faces);
    assert!(switch["after"]["same_pairs"].as_u64().unwrap() > 0, "identities give same-person pairs");
    assert_eq!(switch["neighbours"].as_array().unwrap().len() as u64, faces);

    assert_eq!(
        detector["detector"]["lost"].as_u64().unwrap() as usize,
        expect_lost,
        "{}",
        detector["detector"]
    );
    assert_eq!(detector["detector"]["kept"].as_u64().unwrap() as usize, expected_faces() - expect_lost);
    let dom = run_chromium(detector_page, &["--dump-dom"]);
    assert_eq!(text_of(&dom, "faces-lost"), expect_lost.to_string());
    assert_eq!(text_of(&dom, "faces-kept"), (expected_faces() - expect_lost).to_string());
}
