use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine;

use super::*;
use refacen_face::{Metric, ParamValue, distance};
use refacen_store::{DetectorProvenance, FaceRecord, Facen, ModelProvenance};

fn detector(min_face_size: i64) -> DetectorProvenance {
    DetectorProvenance {
        name: "nnd".into(),
        version: "1.0.0".into(),
        sha256: "ab".repeat(32),
        params: BTreeMap::from([("min-face-size".to_string(), ParamValue::Int(min_face_size))]),
    }
}

fn model(name: &str, facen_size: u32) -> ModelProvenance {
    ModelProvenance { name: name.into(), version: "1".into(), sha256: "cd".repeat(32), facen_size }
}

fn face(id: FaceId, photo: &str, lost: bool, facen: Option<(Vec<f32>, &ModelProvenance)>) -> SnapshotFace {
    let x = id as f32 * 10.0;
    SnapshotFace {
        record: FaceRecord {
            id,
            photo: photo.into(),
            orientation: Some(1),
            bbox: [x, x, x + 50.0, x + 60.0],
            score: 0.99,
            landmarks: [[x + 10.0, x + 20.0]; 5],
            normalized: Some(format!("normalized/{id}.png")),
            thumbnail: Some(format!("thumbs/{id}.jpg")),
            facen: facen.map(|(values, model)| Facen { values, model: model.clone(), at: 7 }),
            lost,
            detector: detector(30),
            detected_at: 5,
            search_pending: false,
        },
        thumbnail_base64: Some(base64::engine::general_purpose::STANDARD.encode(format!("jpeg {id}"))),
    }
}

fn snapshot(faces: Vec<SnapshotFace>) -> Snapshot {
    let photos: BTreeSet<String> = faces.iter().map(|f| f.record.photo.clone()).collect();
    Snapshot {
        format: SNAPSHOT_FORMAT.into(),
        version: SNAPSHOT_VERSION,
        taken_at: 1_700_000_000,
        uploads: Some("/srv/uploads".into()),
        store: "test".into(),
        photos_in_store: photos.len() as u64,
        photos: photos.into_iter().collect(),
        faces,
    }
}

fn options() -> ReportOptions {
    ReportOptions { top: 5, metric: Metric::L2, identities: None }
}

fn run(before: &Snapshot, after: &Snapshot, options: &ReportOptions) -> Result<Report, ReportError> {
    compare((Path::new("before.json"), before), (Path::new("after.json"), after), options)
}

#[test]
fn faces_are_kept_lost_and_gained_by_id() {
    let before = snapshot(vec![
        face(1, "a.jpg", false, None),
        face(2, "a.jpg", false, None),
        face(3, "b.jpg", true, None), // lost already: coming back is a gain
        face(4, "b.jpg", false, None),
    ]);
    let after = snapshot(vec![
        face(1, "a.jpg", false, None),
        face(2, "a.jpg", true, None),
        face(3, "b.jpg", false, None),
        // 4 absent: lost
        face(5, "b.jpg", false, None),
        face(6, "c.jpg", false, None),
    ]);
    let report = run(&before, &after, &options()).unwrap();
    let d = &report.detector;
    assert_eq!((d.kept, d.lost, d.gained, d.photos, d.photos_changed), (1, 2, 3, 3, 3));
    let by_photo: BTreeMap<&str, &PhotoChange> = d.per_photo.iter().map(|p| (p.photo.as_str(), p)).collect();
    assert_eq!(by_photo["a.jpg"].kept.iter().map(|k| k.id).collect::<Vec<_>>(), [1]);
    assert_eq!(by_photo["a.jpg"].lost, [2]);
    assert_eq!(by_photo["b.jpg"].lost, [4]);
    assert_eq!(by_photo["b.jpg"].gained, [3, 5]);
    assert_eq!(by_photo["c.jpg"].gained, [6]);
    assert_eq!(by_photo["a.jpg"].kept[0].box_iou, 1.0);
    assert_eq!(report.before.faces_marked_lost, 1);
    assert_eq!(report.after.faces_present, 4);
    assert!(report.model.is_none(), "no facens, no model section");
}

#[test]
fn unchanged_photos_come_after_changed_ones() {
    let before = snapshot(vec![face(1, "a.jpg", false, None), face(2, "b.jpg", false, None)]);
    let after = snapshot(vec![face(1, "a.jpg", false, None), face(2, "b.jpg", true, None)]);
    let report = run(&before, &after, &options()).unwrap();
    let order: Vec<&str> = report.detector.per_photo.iter().map(|p| p.photo.as_str()).collect();
    assert_eq!(order, ["b.jpg", "a.jpg"]);
}

#[test]
fn capped_snapshots_compare_only_the_photos_both_cover() {
    let before = snapshot(vec![face(1, "a.jpg", false, None), face(2, "b.jpg", false, None)]);
    let mut after = snapshot(vec![face(1, "a.jpg", false, None)]);
    after.photos_in_store = 2;
    let report = run(&before, &after, &options()).unwrap();
    assert_eq!((report.detector.photos, report.detector.kept, report.detector.lost), (1, 1, 0));
}

#[test]
fn snapshots_of_other_uploads_or_stores_are_refused() {
    let before = snapshot(vec![face(1, "a.jpg", false, None)]);
    let mut after = before.clone();
    after.uploads = Some("/srv/other".into());
    let e = run(&before, &after, &options()).unwrap_err().to_string();
    assert!(e.contains("different Uploads") && e.contains("/srv/other") && e.contains("after.json"), "{e}");
    let mut after = snapshot(vec![face(1, "z.jpg", false, None)]);
    after.uploads = None;
    let e = run(&before, &after, &options()).unwrap_err().to_string();
    assert!(e.contains("no photo in common"), "{e}");
}

#[test]
fn snapshots_round_trip_and_damaged_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = model("dlib-resnet-128", 2);
    let snap =
        snapshot(vec![face(1, "a.jpg", false, Some((vec![0.5, 0.25], &m))), face(2, "a.jpg", true, None)]);
    let path = dir.path().join("s.json");
    snap.write(&path).unwrap();
    assert_eq!(Snapshot::read(&path).unwrap(), snap);
    // The records read as `refacen faces --json` prints them.
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(value["faces"][0]["facen"]["model"]["name"], "dlib-resnet-128");
    assert_eq!(value["faces"][1]["lost"], true);

    let garbled = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Snapshot::read(&path).unwrap_err().to_string()
    };
    let e = garbled("{\"faces\": [");
    assert!(e.contains("s.json") && e.contains("not a refacen snapshot"), "{e}");
    let e = garbled("{\"format\": \"something\"}");
    assert!(e.contains("not a refacen snapshot"), "{e}");
    let e = garbled("{\"format\": \"refacen-snapshot\", \"version\": 99}");
    assert!(e.contains("version 99") && e.contains("take the snapshot again"), "{e}");
    let mut bad = serde_json::to_value(&snap).unwrap();
    bad["faces"][0]["thumbnail_base64"] = "not base64!".into();
    let e = garbled(&bad.to_string());
    assert!(e.contains("face 1") && e.contains("base64"), "{e}");
    let mut bad = serde_json::to_value(&snap).unwrap();
    bad["faces"][0]["facen"]["values"] = serde_json::json!([1.0]);
    let e = garbled(&bad.to_string());
    assert!(e.contains("face 1") && e.contains("1 values"), "{e}");
    let e = Snapshot::read(&dir.path().join("missing.json")).unwrap_err().to_string();
    assert!(e.contains("missing.json") && e.contains("refacen snapshot"), "{e}");
}

#[test]
fn identities_match_path_then_file_name_and_skip_unknown() {
    let identities = Identities::from_map(BTreeMap::from([
        ("obama.jpg".to_string(), "obama".to_string()),
        ("2024/biden.jpg".to_string(), "biden".to_string()),
        ("crowd.jpg".to_string(), "multiple".to_string()),
        ("x.jpg".to_string(), "unknown".to_string()),
    ]));
    assert_eq!(identities.person("2024/obama.jpg"), Some("obama"));
    assert_eq!(identities.person("2024/biden.jpg"), Some("biden"));
    assert_eq!(identities.person("biden.jpg"), None);
    assert_eq!(identities.person("crowd.jpg"), None);
    assert_eq!(identities.person("x.jpg"), None);
}

/// Four faces of two people; the old model mixes them up, the new one tells them apart.
fn two_models() -> (Snapshot, Snapshot) {
    let (old, new) = (model("old", 2), model("new", 3));
    let before = snapshot(vec![
        face(1, "p1.jpg", false, Some((vec![0.0, 0.0], &old))),
        face(2, "p2.jpg", false, Some((vec![1.0, 0.0], &old))),
        face(3, "q1.jpg", false, Some((vec![0.1, 0.0], &old))),
        face(4, "q2.jpg", false, Some((vec![1.1, 0.0], &old))),
    ]);
    let after = snapshot(vec![
        face(1, "p1.jpg", false, Some((vec![0.0, 0.0, 0.0], &new))),
        face(2, "p2.jpg", false, Some((vec![0.1, 0.0, 0.0], &new))),
        face(3, "q1.jpg", false, Some((vec![0.0, 5.0, 0.0], &new))),
        face(4, "q2.jpg", false, Some((vec![0.0, 5.1, 0.0], &new))),
    ]);
    (before, after)
}

fn people() -> Identities {
    Identities::from_map(BTreeMap::from([
        ("p1.jpg".to_string(), "p".to_string()),
        ("p2.jpg".to_string(), "p".to_string()),
        ("q1.jpg".to_string(), "q".to_string()),
        ("q2.jpg".to_string(), "q".to_string()),
    ]))
}

#[test]
fn neighbours_and_separation_under_each_model() {
    let (before, after) = two_models();
    let options = ReportOptions { top: 1, metric: Metric::L2, identities: Some(people()) };
    let report = run(&before, &after, &options).unwrap();
    let m = report.model.as_ref().expect("both have facens");
    assert!(m.model_changed);
    assert_eq!((m.faces, m.top, m.top1_changed), (4, 1, 4));
    assert_eq!(m.mean_topk_overlap, Some(0.0));
    let face1 = m.neighbours.iter().find(|n| n.id == 1).unwrap();
    assert_eq!(face1.before[0].id, 3);
    assert_eq!(face1.after[0].id, 2);
    assert_eq!((m.before.same_pairs, m.before.different_pairs), (2, 4));
    assert_eq!(m.after.best_balanced_accuracy, Some(1.0));
    assert_eq!(m.after.auc, Some(1.0));
    let t = m.after.best_threshold.unwrap();
    assert!((0.1..5.0).contains(&t), "{t}");
    assert!(m.before.auc.unwrap() < 0.5, "the old model puts other people closer");
    assert_eq!(m.after.histogram.same.iter().sum::<u64>(), 2);
    assert_eq!(m.after.histogram.different.iter().sum::<u64>(), 4);

    // K beyond the faces there are; without identities pairs go by photo (all different here).
    let report =
        run(&before, &after, &ReportOptions { top: 10, metric: Metric::L2, identities: None }).unwrap();
    let m = report.model.unwrap();
    assert_eq!(m.top, 3);
    assert_eq!(m.mean_topk_overlap, Some(1.0), "with K = n - 1 both lists hold every other face");
    assert_eq!((m.after.same_pairs, m.after.different_pairs), (0, 6));
    assert_eq!(m.after.best_balanced_accuracy, None);
}

#[test]
fn cosine_ignores_facen_length() {
    assert!(distance(Metric::Cosine, &[1.0, 0.0], &[5.0, 0.0]).abs() < 1e-6);
    assert!((distance(Metric::Cosine, &[1.0, 0.0], &[0.0, 2.0]) - 1.0).abs() < 1e-6);
    assert!((distance(Metric::L2, &[0.0, 0.0], &[3.0, 4.0]) - 5.0).abs() < 1e-6);
    // Same direction, other length: a neighbour under cosine, not under L2.
    let m = model("m", 2);
    let snap = snapshot(vec![
        face(1, "a.jpg", false, Some((vec![1.0, 0.0], &m))),
        face(2, "b.jpg", false, Some((vec![9.0, 0.0], &m))),
        face(3, "c.jpg", false, Some((vec![0.7, 0.7], &m))),
    ]);
    let top1 = |metric| {
        let r = run(&snap, &snap, &ReportOptions { top: 1, metric, identities: None }).unwrap();
        r.model.unwrap().neighbours.iter().find(|n| n.id == 1).unwrap().after[0].id
    };
    assert_eq!(top1(Metric::L2), 3);
    assert_eq!(top1(Metric::Cosine), 2);
}

#[test]
fn faces_with_facens_of_another_model_are_left_out() {
    let (before, mut after) = two_models();
    let other = model("other", 3);
    after.faces[3].record.facen.as_mut().unwrap().model = other;
    let m = run(&before, &after, &options()).unwrap().model.unwrap();
    assert_eq!((m.faces, m.faces_excluded), (3, 1));
    assert_eq!(m.after_model.name, "new", "the most used model");
}

#[test]
fn the_page_is_self_contained_and_marked() {
    let (mut before, mut after) = two_models();
    after.faces.push(face(9, "q2.jpg", false, None));
    after.faces[0].record.lost = true;
    // A photo name that needs escaping (face ids never change photo, so in both snapshots).
    for snapshot in [&mut before, &mut after] {
        snapshot.faces[1].record.photo = "<b>p2.jpg</b>".into();
        for photo in &mut snapshot.photos {
            if photo == "p2.jpg" {
                *photo = "<b>p2.jpg</b>".into();
            }
        }
        snapshot.photos.sort();
    }
    let report =
        run(&before, &after, &ReportOptions { top: 2, metric: Metric::L2, identities: Some(people()) })
            .unwrap();
    let page = html::render(&report, &before, &after);
    assert!(page.starts_with("<!DOCTYPE html>"));
    for mark in [
        "<span id=\"faces-kept\">3</span>",
        "<span id=\"faces-lost\">1</span>",
        "<span id=\"faces-gained\">1</span>",
        "<span id=\"faces-compared\">3</span>",
        "id=\"histogram-before\"",
        "id=\"histogram-after\"",
        "data-photo=\"p1.jpg\" data-kept=\"0\" data-lost=\"1\" data-gained=\"0\"",
        "data-faces-lost=\"1\"",
    ] {
        assert!(page.contains(mark), "no {mark}");
    }
    // kept: 3 faces x 2 sides, lost 1, gained 1
    assert!(page.contains("data-images=\"8\""), "image count");
    assert_eq!(page.matches("<img ").count(), 8);
    assert!(page.contains("src=\"data:image/jpeg;base64,"));
    assert!(!page.contains("<b>p2.jpg</b>") && page.contains("&lt;b&gt;p2.jpg&lt;/b&gt;"), "escaped");
    for external in ["http://", "https://", "src=\"//", "<link"] {
        let outside_svg_namespace = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!outside_svg_namespace.contains(external), "{external}");
    }
    // Neighbour cells of kept faces share one inline CSS thumbnail per face.
    assert!(page.contains(".f2{background-image:url(data:image/jpeg;base64,"));
}

#[test]
fn timestamps_read_as_utc() {
    assert_eq!(html::utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(html::utc(1_796_000_000), "2026-11-30 00:53:20 UTC");
}
