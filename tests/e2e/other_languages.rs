//! Guests written in Python (componentize-py) and JavaScript (componentize-js), built from
//! guests/python and guests/js by `cargo xtask guests`: they drive the same dlib ResNet graph
//! as the Rust guest `dlib-resnet-128` and must give its facens, in a real `regenerate`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::regenerate::{Uploads, content, count, expected_faces};
use crate::support::{guest, refacen};

const RUST_MODEL: &str = "dlib-resnet-128";
const OTHER_MODELS: [&str; 2] = ["py-dlib-resnet-128", "js-dlib-resnet-128"];
/// The largest difference accepted between a value of their facens and the Rust guest's.
const TOLERANCE: f32 = 1e-5;

/// `regenerate` of the sample photos with nnd and `model`: (photo, box) → facen.
fn regenerate_with(model: &str) -> BTreeMap<(String, Vec<i64>), Vec<f32>> {
    guest(model); // fails with "run `cargo xtask guests`" when missing
    let uploads = Uploads::new();
    let (out, summary) = uploads.regenerate(&["--detector", "nnd", "--model", model]);
    assert_eq!(out.code, 0, "{model}: {}", out.stderr);
    assert_eq!(count(&summary, "done"), 6, "{model}: {summary}");
    let faces = uploads.faces();
    assert_eq!(faces.len(), expected_faces(), "{model}");
    for face in faces.values() {
        assert_eq!(face["facen"]["model"]["name"], model);
        assert_eq!(face["facen"]["values"].as_array().map(Vec::len), Some(128), "{model}");
    }
    content(&faces)
}

#[test]
fn python_and_javascript_guests_regenerate_with_the_rust_guests_facens() {
    let rust = regenerate_with(RUST_MODEL);
    for model in OTHER_MODELS {
        let other = regenerate_with(model);
        assert_eq!(
            other.keys().collect::<Vec<_>>(),
            rust.keys().collect::<Vec<_>>(),
            "{model}: the same faces (nnd found them, the model changes nothing there)"
        );
        let mut worst = 0f32;
        for (key, facen) in &other {
            let expected = &rust[key];
            for (a, b) in facen.iter().zip(expected) {
                let d = (a - b).abs();
                assert!(d <= TOLERANCE, "{model} on {key:?}: {a} against the Rust guest's {b}");
                worst = worst.max(d);
            }
        }
        eprintln!(
            "{model}: largest difference from {RUST_MODEL}'s facens {worst:e} over {} faces",
            other.len()
        );
    }
}

#[test]
fn python_and_javascript_guests_are_listed_under_their_file_names() {
    let out = refacen(&["guests", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json_lines();
    for model in OTHER_MODELS {
        let entry: &Value = lines
            .iter()
            .find(|g| g["name"] == model)
            .unwrap_or_else(|| panic!("{model} is not listed: {}", out.stdout));
        assert_eq!(entry["world"], "embedder", "{entry}");
        assert_eq!(entry["facen_size"], 128, "{entry}");
        let path = entry["path"].as_str().expect("a path");
        assert!(path.ends_with(&format!("/{model}.wasm")), "{model} is in {path}");
        let rust = lines.iter().find(|g| g["name"] == RUST_MODEL).expect("dlib-resnet-128 is listed");
        assert_eq!(entry["template"], rust["template"], "{model} declares the Rust guest's template");
    }
}
