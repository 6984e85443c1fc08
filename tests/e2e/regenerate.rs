//! `refacen regenerate` on a temporary Uploads of the sample photos, with the embedded store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Output, f32s, photos, refacen, reference, test_guest, write};

const PHOTOS: [&str; 6] =
    ["astronaut.png", "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg"];

/// An Uploads directory with the sample photos (some in a subdirectory) and its state beside it.
pub struct Uploads {
    _root: tempfile::TempDir,
    pub dir: PathBuf,
    pub state: PathBuf,
}

impl Uploads {
    pub fn new() -> Self {
        Self::with_copies(1)
    }

    /// The sample photos, and `copies - 1` more copies of them under `copy<k>/`.
    pub fn with_copies(copies: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("uploads");
        std::fs::create_dir_all(dir.join("2024")).unwrap();
        for (i, name) in PHOTOS.iter().enumerate() {
            let target = if i % 2 == 0 { dir.join(name) } else { dir.join("2024").join(name) };
            std::fs::copy(photos().join(name), target).unwrap();
            for copy in 1..copies {
                let sub = dir.join(format!("copy{copy}"));
                std::fs::create_dir_all(&sub).unwrap();
                std::fs::copy(photos().join(name), sub.join(name)).unwrap();
            }
        }
        let state = root.path().join("state");
        Uploads { dir, state, _root: root }
    }

    /// An Uploads of only the sample photos `names`, for tests that need a store, not the work.
    pub fn of(names: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("uploads");
        std::fs::create_dir_all(&dir).unwrap();
        for name in names {
            std::fs::copy(photos().join(name), dir.join(name)).unwrap();
        }
        let state = root.path().join("state");
        Uploads { dir, state, _root: root }
    }

    /// `regenerate --json --uploads ... --state-dir ...` and `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "regenerate".to_string(),
            "--json".into(),
            "--uploads".into(),
            self.dir.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `regenerate --json` with `extra` options: its output and summary.
    pub fn regenerate(&self, extra: &[&str]) -> (Output, Value) {
        let out = refacen(&self.args(extra));
        let summary = out.json_lines().pop().unwrap_or_else(|| panic!("no summary: {}", out.stderr));
        (out, summary)
    }

    /// The embedded store's face records, by id.
    pub fn faces(&self) -> BTreeMap<u64, Value> {
        let out = refacen(&["faces", "--json", "--state-dir", &self.state.display().to_string()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines().into_iter().map(|f| (f["id"].as_u64().unwrap(), f)).collect()
    }

    pub fn files(&self) -> PathBuf {
        self.state.join("files")
    }
}

/// The number of faces facenet-pytorch finds with findface's parameters (nnd's defaults).
pub fn expected_faces() -> usize {
    let reference = reference();
    PHOTOS.iter().map(|p| reference[p]["mtcnn_findface"].as_array().unwrap().len()).sum()
}

pub fn count(summary: &Value, key: &str) -> u64 {
    summary[key].as_u64().unwrap_or_else(|| panic!("no {key} in {summary}"))
}

#[test]
fn regenerates_faces_files_and_facens_and_a_rerun_changes_nothing() {
    let uploads = Uploads::new();
    let (out, summary) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "done"), 6);
    assert_eq!(count(&summary, "faces_new") as usize, expected_faces());
    let faces = uploads.faces();
    assert_eq!(faces.len(), expected_faces());
    for face in faces.values() {
        assert_eq!(face["lost"], false);
        let normalized = image::open(uploads.files().join(face["normalized"].as_str().unwrap())).unwrap();
        assert_eq!((normalized.width(), normalized.height()), (150, 150));
        let thumb = image::open(uploads.files().join(face["thumbnail"].as_str().unwrap())).unwrap();
        assert_eq!(thumb.height(), 160);
        assert_eq!(face["facen"]["values"].as_array().unwrap().len(), 128);
        assert_eq!(face["facen"]["model"]["name"], "dlib-resnet-128");
        assert_eq!(face["detector"]["name"], "nnd");
        assert_eq!(face["detector"]["params"]["min-face-size"], 30.0);
        assert_eq!(face["detector"]["sha256"].as_str().unwrap().len(), 64);
    }
    let photos_with_faces: std::collections::BTreeSet<&str> =
        faces.values().map(|f| f["photo"].as_str().unwrap()).collect();
    assert!(photos_with_faces.contains("2024/biden.jpg"), "{photos_with_faces:?}");

    let (out, summary) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "up_to_date"), 6);
    assert_eq!(count(&summary, "done"), 0);
    assert_eq!(uploads.faces(), faces, "a rerun changes nothing");
}

#[test]
fn facens_alone_use_the_stored_normalized_faces_not_the_originals() {
    let uploads = Uploads::new();
    let (out, _) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = uploads.faces();
    std::fs::remove_dir_all(&uploads.dir).unwrap();

    // A second model with another facen size, then back to the first.
    let toy = test_guest("toy-embedder").display().to_string();
    let (out, summary) = uploads.regenerate(&["--regenerate", "facens", "--model", &toy]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "facens") as usize, before.len());
    for face in uploads.faces().values() {
        assert_eq!(face["facen"]["values"].as_array().unwrap().len(), 16);
        assert_eq!(face["facen"]["model"]["name"], "toy-embedder");
    }
    let (out, summary) = uploads.regenerate(&["--regenerate", "facens"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "facens") as usize, before.len());
    for (id, face) in uploads.faces() {
        let (old, new) = (f32s(&before[&id]["facen"]["values"]), f32s(&face["facen"]["values"]));
        assert_eq!(old, new, "face {id}: the same model on the same normalized face gives the same facen");
    }
    // Already computed with this model: nothing to do; --facen-size skips by size.
    let (_, summary) = uploads.regenerate(&["--regenerate", "facens"]);
    assert_eq!(count(&summary, "up_to_date") as usize, before.len());
    let (_, summary) =
        uploads.regenerate(&["--regenerate", "facens", "--model", &toy, "--facen-size", "128"]);
    assert_eq!(count(&summary, "up_to_date") as usize, before.len());
}

/// (photo, box rounded to 0.1 px) → facen, ignoring ids.
pub fn content(faces: &BTreeMap<u64, Value>) -> BTreeMap<(String, Vec<i64>), Vec<f32>> {
    faces
        .values()
        .map(|f| {
            let bbox = f32s(&f["bbox"]).iter().map(|v| (v * 10.0).round() as i64).collect();
            ((f["photo"].as_str().unwrap().to_string(), bbox), f32s(&f["facen"]["values"]))
        })
        .collect()
}

#[test]
fn two_every_other_shares_equal_one_full_run() {
    let full = Uploads::new();
    assert_eq!(full.regenerate(&[]).0.code, 0);
    let split = Uploads::new();
    let (_, first) = split.regenerate(&["--every-other", "2", "--every-other-offset", "0"]);
    let (_, second) = split.regenerate(&["--every-other", "2", "--every-other-offset", "1"]);
    assert_eq!(count(&first, "selected"), 3);
    assert_eq!(count(&second, "selected"), 3);
    assert_eq!(content(&split.faces()), content(&full.faces()));
    let out = refacen(&[
        "regenerate",
        "--uploads",
        &split.dir.display().to_string(),
        "--every-other",
        "2",
        "--every-other-offset",
        "2",
    ]);
    out.assert_refused(&["--every-other-offset 2 must be below --every-other 2"]);
}

#[test]
fn identities_survive_redetection_and_lost_faces_are_kept() {
    let uploads = Uploads::new();
    assert_eq!(uploads.regenerate(&[]).0.code, 0);
    let before = uploads.faces();
    // A stricter final stage drops the faces facenet-pytorch scores below 0.95.
    let reference = reference();
    let weak = PHOTOS
        .iter()
        .flat_map(|p| reference[p]["mtcnn_findface"].as_array().unwrap().iter())
        .filter(|f| f["prob"].as_f64().unwrap() < 0.95)
        .count() as u64;
    assert!(weak > 0);
    let (out, summary) = uploads.regenerate(&["--param", "o-net-thresh=0.95"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "faces_lost"), weak);
    assert_eq!(count(&summary, "faces_new"), 0);
    assert_eq!(count(&summary, "faces_kept") as usize, before.len() - weak as usize);
    let after = uploads.faces();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "no face deleted or renumbered"
    );
    let lost: Vec<&Value> = after.values().filter(|f| f["lost"] == true).collect();
    assert_eq!(lost.len() as u64, weak);
    for face in lost {
        let id = face["id"].as_u64().unwrap();
        assert_eq!(face["facen"], before[&id]["facen"], "a lost face keeps its data");
    }
    for face in after.values().filter(|f| f["lost"] == false) {
        assert_eq!(face["detector"]["params"]["o-net-thresh"], 0.95);
    }
    // Dry run: counts, no changes.
    let (out, summary) = uploads.regenerate(&["--dry-run", "--param", "o-net-thresh=0.9"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "faces_kept") as usize, before.len(), "the lost faces would come back");
    assert_eq!(uploads.faces(), after, "a dry run writes nothing");
}

#[test]
fn min_and_max_id_select_photos_by_their_faces() {
    let uploads = Uploads::new();
    assert_eq!(uploads.regenerate(&[]).0.code, 0);
    let faces = uploads.faces();
    let photo_of_1 = faces[&1]["photo"].as_str().unwrap().to_string();
    let (out, summary) =
        uploads.regenerate(&["--min-id", "1", "--max-id", "1", "--param", "o-net-thresh=0.91"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "selected"), 1);
    for face in uploads.faces().values() {
        let changed = face["detector"]["params"]["o-net-thresh"] == 0.91;
        assert_eq!(changed, face["photo"] == photo_of_1.as_str(), "{face}");
    }
}

#[test]
fn same_person_faces_are_close_and_different_people_far() {
    let uploads = Uploads::new();
    assert_eq!(uploads.regenerate(&[]).0.code, 0);
    let identities = crate::support::identities();
    // Each photo's subject: its largest face (the false positives are small background faces).
    let mut subject: BTreeMap<String, (f32, Vec<f32>)> = BTreeMap::new();
    for face in uploads.faces().values() {
        let name =
            Path::new(face["photo"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
        let b = f32s(&face["bbox"]);
        let area = (b[2] - b[0]) * (b[3] - b[1]);
        if subject.get(&name).is_none_or(|(a, _)| area > *a) {
            subject.insert(name, (area, f32s(&face["facen"]["values"])));
        }
    }
    assert_eq!(subject.len(), PHOTOS.len());
    let names: Vec<&String> = subject.keys().collect();
    let mut pairs = 0;
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let d: f32 =
                subject[*a].1.iter().zip(&subject[*b].1).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt();
            if identities[*a] == identities[*b] {
                assert!(d < 0.6, "{a} and {b} are both {}: distance {d}", identities[*a]);
            } else {
                assert!(d > 0.6, "{a} ({}) and {b} ({}): distance {d}", identities[*a], identities[*b]);
            }
            pairs += 1;
        }
    }
    assert_eq!(pairs, 15);
}

#[test]
fn bad_files_are_reported_and_the_rest_committed() {
    let uploads = Uploads::new();
    write(&uploads.dir, "corrupt.jpg", &{
        let mut bytes = std::fs::read(photos().join("obama2.jpg")).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle..middle + 2000].iter_mut().for_each(|b| *b = 0xff);
        bytes
    });
    write(&uploads.dir, "empty.jpg", b"");
    write(&uploads.dir, "notes.txt", b"not a photo\n");
    let locked = uploads.dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    write(&locked, "hidden.jpg", &std::fs::read(photos().join("biden.jpg")).unwrap());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (out, summary) =
        crate::support::as_unprivileged(&uploads.dir, &uploads.state, || uploads.regenerate(&[]));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(count(&summary, "done"), 6, "{}", out.stderr);
    assert_eq!(count(&summary, "failed"), 3, "{}", out.stderr);
    assert_eq!(count(&summary, "skipped"), 1, "notes.txt is no photo: skipped, not failed: {summary}");
    let failures = &summary["failures"];
    assert_eq!(failures["corrupt image"], 2, "{summary}");
    assert_eq!(failures["unreadable directory"], 1, "{summary}");
    for name in ["corrupt.jpg", "empty.jpg", "locked"] {
        assert!(out.stderr.contains(name), "{name} not reported: {}", out.stderr);
    }
    assert_eq!(uploads.faces().len(), expected_faces(), "the good photos are committed");
}

#[test]
fn a_config_file_sets_options_and_the_command_line_overrides_it() {
    let uploads = Uploads::new();
    let config = uploads.state.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "uploads = {:?}\nstate-dir = {:?}\nregenerate = \"normalized\"\nparam = {{ o-net-thresh = 0.95, min-face-size = 40 }}\n",
            uploads.dir.display().to_string(),
            uploads.state.display().to_string()
        ),
    )
    .unwrap();
    let out = refacen(&[
        "regenerate",
        "--json",
        "--config",
        &config.display().to_string(),
        "--param",
        "min-face-size=35",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for face in uploads.faces().values() {
        assert_eq!(face["detector"]["params"]["o-net-thresh"], 0.95, "from the file");
        assert_eq!(face["detector"]["params"]["min-face-size"], 35.0, "the command line wins");
        assert!(
            face["thumbnail"].is_null() && face["facen"].is_null(),
            "regenerate = normalized, from the file"
        );
    }
    std::fs::write(&config, "uploads = \"/u\"\nthumbs = true\n").unwrap();
    let out = refacen(&["regenerate", "--config", &config.display().to_string()]);
    out.assert_refused(&["unknown key `thumbs`"]);
}

#[test]
fn search_finds_the_same_person_first() {
    let uploads = Uploads::new();
    assert_eq!(uploads.regenerate(&[]).0.code, 0);
    let out = refacen(&[
        "search",
        "--json",
        "--top",
        "4",
        "--uploads",
        &uploads.dir.display().to_string(),
        "--state-dir",
        &uploads.state.display().to_string(),
        &photos().join("obama2.jpg").display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let results = out.json_lines();
    assert_eq!(results.len(), 1, "obama2.jpg has one face");
    let nearest = results[0]["nearest"].as_array().unwrap();
    assert_eq!(nearest.len(), 4);
    // The photo itself (distance ~0), then the other Obama photos, all closer than 0.6.
    assert_eq!(nearest[0]["photo"], "2024/obama2.jpg");
    assert!(nearest[0]["distance"].as_f64().unwrap() < 0.01);
    for hit in nearest {
        let photo = hit["photo"].as_str().unwrap();
        assert!(photo.contains("obama"), "{hit}");
        assert!(hit["distance"].as_f64().unwrap() < 0.6, "{hit}");
    }
}
