//! `nnd` against facenet-pytorch's MTCNN (reference outputs in tests/fixtures/faces).

use crate::support::{f32s, match_reference_faces, photo, refacen, reference};

const PHOTOS: [&str; 6] =
    ["astronaut.png", "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg"];

/// Runs nnd with `params` on every photo and compares with `reference[photo][key]`: same
/// number of faces; each reference face matched with IoU ≥ 0.9, score within 0.02 and
/// landmarks within 2% of the box size.
fn check(key: &str, params: &[&str]) {
    let reference = reference();
    let options: Vec<&str> = params.iter().flat_map(|p| ["--param", p]).collect();
    let compared = match_reference_faces(
        &options,
        &PHOTOS,
        |name| &reference[name][key],
        "box",
        |name, i, want, best| {
            let score = best["score"].as_f64().unwrap() as f32;
            let want_score = want["prob"].as_f64().unwrap() as f32;
            assert!((score - want_score).abs() <= 0.02, "{name} face {i}: score {score} vs {want_score}");
            let want_box = f32s(&want["box"]);
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
        },
    );
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
    out.assert_refused(&["no parameter `min-face`", "min-face-size"]);
    let out = refacen(&["detect", "--param", "min-face-size=big", &photo("astronaut.png")]);
    out.assert_refused(&["takes a number"]);
    // Accepted by type, refused by the guest's range check: a per-photo error naming it.
    let out = refacen(&["detect", "--param", "scale-factor=1.5", &photo("astronaut.png")]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("guest `nnd`") && out.stderr.contains("scale-factor"), "{}", out.stderr);
}
