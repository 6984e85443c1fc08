//! `nnd` against facenet-pytorch's MTCNN (reference outputs in tests/fixtures/faces).

use crate::support::{f32s, faces, iou, photo, refacen, reference};

const PHOTOS: [&str; 6] =
    ["astronaut.png", "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg"];

/// Runs nnd with `params` on every photo and compares with `reference[photo][key]`: same
/// number of faces; each reference face matched with IoU ≥ 0.9, score within 0.02 and
/// landmarks within 2% of the box size.
fn check(key: &str, params: &[&str]) {
    let reference = reference();
    let mut args = vec!["detect".to_string(), "--json".into()];
    for p in params {
        args.push("--param".into());
        args.push(p.to_string());
    }
    args.extend(PHOTOS.iter().map(|p| photo(p)));
    let out = refacen(&args);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.len(), PHOTOS.len());
    let mut compared = 0;
    for (name, line) in PHOTOS.iter().zip(&lines) {
        let ours = faces(line);
        let theirs = reference[name][key].as_array().expect("reference faces");
        assert_eq!(ours.len(), theirs.len(), "{name}: face count ({key})");
        for (i, want) in theirs.iter().enumerate() {
            let want_box = f32s(&want["box"]);
            let (best, overlap) = ours
                .iter()
                .map(|f| (f, iou(&f32s(&f["bbox"]), &want_box)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .expect("faces");
            assert!(overlap >= 0.9, "{name} face {i}: IoU {overlap} ({key})");
            let score = best["score"].as_f64().unwrap() as f32;
            let want_score = want["prob"].as_f64().unwrap() as f32;
            assert!((score - want_score).abs() <= 0.02, "{name} face {i}: score {score} vs {want_score}");
            let size = (want_box[2] - want_box[0]).max(want_box[3] - want_box[1]);
            for (k, (got, exp)) in best["landmarks"]
                .as_array()
                .unwrap()
                .iter()
                .zip(want["landmarks"].as_array().unwrap())
                .enumerate()
            {
                let (got, exp) = (f32s(got), f32s(exp));
                let error = (got[0] - exp[0]).abs().max((got[1] - exp[1]).abs());
                assert!(error <= 0.02 * size, "{name} face {i} landmark {k}: {got:?} vs {exp:?}");
            }
            compared += 1;
        }
    }
    assert!(compared >= 7, "compared only {compared} faces");
}

#[test]
fn nnd_matches_facenet_pytorch_with_findface_parameters() {
    // nnd's defaults are findface-regenerate's: min face 30, thresholds 0.5/0.5/0.9, factor 0.79.
    check("mtcnn_findface", &[]);
}

#[test]
fn nnd_matches_facenet_pytorch_with_its_defaults() {
    check(
        "mtcnn_default",
        &[
            "min-face-size=20",
            "p-net-thresh=0.6",
            "r-net-thresh=0.7",
            "o-net-thresh=0.7",
            "scale-factor=0.709",
        ],
    );
}

#[test]
fn decoded_pixels_match_pillow() {
    // The reference pipelines decode with Pillow (libjpeg-turbo); so must we, or borderline
    // detections differ.
    use sha2::{Digest, Sha256};
    let reference = reference();
    for name in PHOTOS {
        let rgb =
            refacen::imaging::decode_rgb(std::path::Path::new(&photo(name)), &Default::default()).unwrap();
        let digest = hex::encode(Sha256::digest(rgb.as_raw()));
        assert_eq!(digest, reference[name]["rgb_sha256"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn unknown_and_malformed_parameters_are_refused() {
    let out = refacen(&["detect", "--param", "min-face=30", &photo("astronaut.png")]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no parameter `min-face`") && out.stderr.contains("min-face-size"),
        "{}",
        out.stderr
    );
    let out = refacen(&["detect", "--param", "min-face-size=big", &photo("astronaut.png")]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("takes a number"), "{}", out.stderr);
    // Accepted by type, refused by the guest's range check: a per-photo error naming it.
    let out = refacen(&["detect", "--param", "scale-factor=1.5", &photo("astronaut.png")]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("guest `nnd`") && out.stderr.contains("scale-factor"), "{}", out.stderr);
}
