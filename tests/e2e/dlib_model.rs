//! `dlib-resnet-128` against dlib itself: the face chips dlib cut (tests/fixtures/faces/chips)
//! embedded by refacen must give dlib's descriptors (reference.json, `num_jitters=0`), and
//! tell the same people apart as dlib does (identities.json).

use std::path::PathBuf;

use crate::support::{embed_aligned, f32s, reference, repo};

const MODEL: &str = "dlib-resnet-128";
/// dlib's same-person threshold on the L2 distance of descriptors.
const SAME_PERSON: f32 = 0.6;
/// The largest L2 distance from dlib's descriptor accepted (they have norms near 1.4).
const TOLERANCE: f32 = 0.01;

/// A chip of the fixtures and what reference.json says of it.
struct Chip {
    photo: String,
    face: usize,
    path: PathBuf,
    descriptor: Vec<f32>,
}

/// Every chip of reference.json's `dlib_hog` faces: `chips/<stem>_<i>.png` is face i of photo
/// `<stem>.<ext>`.
fn chips() -> Vec<Chip> {
    let reference = reference();
    let mut chips = Vec::new();
    for (photo, entry) in reference.as_object().expect("reference.json is an object") {
        for (face, f) in entry["dlib_hog"].as_array().expect("dlib_hog faces").iter().enumerate() {
            let chip = f["chip"].as_str().expect("chip path");
            chips.push(Chip {
                photo: photo.clone(),
                face,
                path: repo().join("tests/fixtures/faces").join(chip),
                descriptor: f32s(&f["descriptor"]),
            });
        }
    }
    chips.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(chips.len(), 7, "reference.json's dlib_hog chips");
    chips
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

#[test]
fn dlib_resnet_128_gives_dlibs_descriptors() {
    let chips = chips();
    let facens = embed_aligned(MODEL, chips.iter().map(|c| c.path.as_path()));
    let mut worst = 0f32;
    for chip in &chips {
        let facen = facens.get(&chip.path).unwrap_or_else(|| panic!("no facen for {}", chip.path.display()));
        assert_eq!(facen.len(), 128, "{}: facen size", chip.path.display());
        let d = distance(facen, &chip.descriptor);
        assert!(
            d < TOLERANCE,
            "{} (face {} of {}): L2 distance {d} from dlib's descriptor",
            chip.path.display(),
            chip.face,
            chip.photo
        );
        worst = worst.max(d);
    }
    eprintln!("dlib-resnet-128: largest L2 distance from dlib's descriptors {worst:e}");
}

#[test]
fn dlib_resnet_128_tells_people_apart() {
    let identities = crate::support::identities();
    // astronaut.png's second dlib_hog face is a false positive on a mission patch.
    let chips: Vec<Chip> =
        chips().into_iter().filter(|c| !(c.photo == "astronaut.png" && c.face == 1)).collect();
    assert_eq!(chips.len(), 6);
    let facens = embed_aligned(MODEL, chips.iter().map(|c| c.path.as_path()));

    let mut pairs = 0;
    for (i, a) in chips.iter().enumerate() {
        for b in &chips[i + 1..] {
            let same = identities[&a.photo] == identities[&b.photo];
            // The premise, from the fixtures alone: dlib's own descriptors separate these faces.
            let dlib = distance(&a.descriptor, &b.descriptor);
            assert_eq!(
                dlib < SAME_PERSON,
                same,
                "fixtures: dlib's distance {dlib} for {} / {}",
                a.photo,
                b.photo
            );

            let ours = distance(&facens[&a.path], &facens[&b.path]);
            if same {
                assert!(
                    ours < SAME_PERSON,
                    "{} and {} are the same person, distance {ours}",
                    a.photo,
                    b.photo
                );
            } else {
                assert!(
                    ours > SAME_PERSON,
                    "{} and {} are different people, distance {ours}",
                    a.photo,
                    b.photo
                );
            }
            pairs += 1;
        }
    }
    assert_eq!(pairs, 15);
}

#[test]
fn embed_refuses_images_that_are_not_normalized_faces() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    image::RgbImage::new(200, 180).save(&big).unwrap();
    let chip = crate::support::repo().join("tests/fixtures/faces/chips/biden_0.png");
    let out = crate::support::refacen(&[
        "embed",
        "--json",
        "--aligned",
        &big.display().to_string(),
        &chip.display().to_string(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("200x180 is not a normalized face (150x150)"), "{}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.iter().filter(|l| l["facen"].is_array()).count(), 1, "the good chip is embedded");
}
