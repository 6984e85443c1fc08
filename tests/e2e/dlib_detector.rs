//! The `dlib` detector against dlib itself (dlib-bin 20.0.1's `cnn_face_detection_model_v1`,
//! upsample 0, and `shape_predictor_5_face_landmarks` on its boxes): reference outputs in
//! tests/fixtures/dlib/reference.json, made by tests/fixtures/dlib/reference.py.

use std::path::Path;

use serde_json::Value;

use crate::support::{f32s, faces, iou, match_reference_faces, photo, points, refacen, repo};

fn dlib_reference() -> Value {
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/dlib/reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// dlib's 5-point mean shape and refacen's landmarks on dlib's mean face, restated here from
/// dlib's `get_face_chip_details` and its 68-point mean face (see guests/dlib/src/landmarks.rs
/// for the mapping these define): the test applies the documented mapping to dlib's parts.
const SHAPE5_MEAN: [[f64; 2]; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];
const MEAN_FACE: [[f64; 2]; 5] = [
    [0.225492, 0.215990],
    [0.754761, 0.215990],
    [0.490127, 0.515625],
    [0.254149, 0.780233],
    [0.726104, 0.780233],
];

/// Where refacen's landmarks are for dlib's five parts: the least-squares similarity from the
/// 5-point mean shape to the parts, applied to the mean face's landmarks (an affine solve by
/// normal equations, written independently of the guest's closed form).
fn expected_landmarks(parts: &[[f64; 2]]) -> Vec<[f64; 2]> {
    // Unknowns (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty.
    let mut ata = [[0f64; 4]; 4];
    let mut atb = [0f64; 4];
    for (m, p) in SHAPE5_MEAN.iter().zip(parts) {
        for (row, target) in [([m[0], -m[1], 1.0, 0.0], p[0]), ([m[1], m[0], 0.0, 1.0], p[1])] {
            for i in 0..4 {
                atb[i] += row[i] * target;
                for j in 0..4 {
                    ata[i][j] += row[i] * row[j];
                }
            }
        }
    }
    let s = solve4(ata, atb);
    MEAN_FACE.iter().map(|m| [s[0] * m[0] - s[1] * m[1] + s[2], s[1] * m[0] + s[0] * m[1] + s[3]]).collect()
}

fn solve4(mut a: [[f64; 4]; 4], mut b: [f64; 4]) -> [f64; 4] {
    for c in 0..4 {
        let p = (c..4).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, p);
        b.swap(c, p);
        for r in 0..4 {
            if r != c {
                let f = a[r][c] / a[c][c];
                let pivot = a[c];
                for (v, p) in a[r].iter_mut().zip(pivot) {
                    *v -= f * p;
                }
                b[r] -= f * b[c];
            }
        }
    }
    std::array::from_fn(|i| b[i] / a[i][i])
}

#[test]
fn dlib_matches_dlibs_cnn_detector_and_shape_predictor() {
    let reference = dlib_reference();
    let images = &reference["images"];
    let names: Vec<&str> = images.as_object().expect("images").keys().map(String::as_str).collect();
    // Compared in the photo's own pixels (dlib's boxes of a scaled-down photo scaled up).
    let options = ["--detector", "dlib"];
    let compared = match_reference_faces(
        &options,
        &names,
        |name| &images[name]["faces"],
        "full_box",
        |name, i, want, best| {
            let score = best["score"].as_f64().unwrap();
            let want_score = want["confidence"].as_f64().unwrap();
            assert!(
                (score - want_score).abs() <= 0.05,
                "{name} face {i}: confidence {score} vs {want_score}"
            );
            let want_box = f32s(&want["full_box"]);
            let size = f64::from((want_box[2] - want_box[0]).max(want_box[3] - want_box[1]));
            let expected = expected_landmarks(&points(&want["parts"]));
            for (k, (got, exp)) in best["landmarks"].as_array().unwrap().iter().zip(expected).enumerate() {
                let got = f32s(got);
                let error = (f64::from(got[0]) - exp[0]).abs().max((f64::from(got[1]) - exp[1]).abs());
                assert!(
                    error <= 0.02 * size,
                    "{name} face {i} landmark {k}: {got:?} vs {exp:?} (size {size})"
                );
            }
        },
    );
    assert!(compared >= 6, "compared only {compared} faces");
}

#[test]
fn dlib_declares_findface_parameters_and_refuses_bad_values() {
    let out = refacen(&["guests", "--json"]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let lines = out.json_lines();
    let dlib = lines.iter().find(|g| g["name"] == "dlib").expect("the dlib guest is listed");
    assert_eq!(dlib["world"], "detector");
    let params = dlib["params"].to_string();
    assert!(params.contains("adjust-threshold") && params.contains("max-size"), "{params}");

    let astronaut = photo("astronaut.png");
    let detect = |params: &[&str]| {
        let mut args = vec!["detect", "--json", "--detector", "dlib"];
        for p in params {
            args.extend(["--param", p]);
        }
        args.push(&astronaut);
        refacen(&args)
    };
    // A high threshold finds nothing on a photo with one clear face (confidence ~1.06).
    let strict = detect(&["adjust-threshold=2"]);
    assert_eq!(strict.code, 0, "stderr: {}", strict.stderr);
    assert!(faces(&strict.json_lines()[0]).is_empty());
    let bad = detect(&["max-size=3"]);
    assert_ne!(bad.code, 0);
    // The refusal names the guest and the parameter.
    let report = format!("{}{}", bad.stdout, bad.stderr);
    assert!(report.contains("guest `dlib`") && report.contains("max-size must be"), "{report}");
    // Scaling a 512-pixel photo to 400 before detection still finds the face (95 pixels wide,
    // 74 once scaled: about the 80-pixel window), reported in full-size pixels.
    let scaled = detect(&["max-size=400"]);
    assert_eq!(scaled.code, 0, "stderr: {}", scaled.stderr);
    let lines = scaled.json_lines();
    let found = faces(&lines[0]);
    assert_eq!(found.len(), 1);
    let reference = dlib_reference();
    let want = f32s(&reference["images"]["astronaut.png"]["faces"][0]["full_box"]);
    assert!(iou(&f32s(&found[0]["bbox"]), &want) >= 0.8);
    assert!(Path::new(&astronaut).is_file());
}
