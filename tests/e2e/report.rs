//! `refacen snapshot` and `refacen report`: a detector and model swap on the sample photos,
//! the report's figures checked against the face records `refacen faces --json` lists, and its
//! page rendered by headless Chromium.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::Value;

use crate::regenerate::{Uploads, count};
use crate::support::{Output, f32s, refacen, repo, test_guest};

/// The detector settings before and after the swap: a stricter final stage first (the weak
/// faces are not found), then the default one with a larger smallest face, which finds a weak
/// face again and moves some boxes a little; matching identities at IoU 0.9 rather than 0.5
/// makes those moved faces lost and found anew, so the report has kept, lost and gained faces.
const BEFORE_PARAMS: [&str; 2] = ["--param", "o-net-thresh=0.95"];
const AFTER_PARAMS: [&str; 4] = ["--param", "min-face-size=80", "--identity-iou", "0.9"];

fn take_snapshot(uploads: &Uploads, out: &Path) {
    let state = uploads.state.display().to_string();
    let result = refacen(&[
        "snapshot",
        "--uploads",
        &uploads.dir.display().to_string(),
        "--state-dir",
        &state,
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(result.code, 0, "{}", result.stderr);
}

/// `refacen report` of two snapshots into `out`, with `options`.
fn run_report(before: &Path, after: &Path, out: &Path, options: &[&str]) -> Output {
    let (before, after, out) =
        (before.display().to_string(), after.display().to_string(), out.display().to_string());
    let mut args = vec!["report", "--before", &before, "--after", &after, "--out", &out];
    args.extend_from_slice(options);
    refacen(&args)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn present(faces: &BTreeMap<u64, Value>) -> BTreeSet<u64> {
    faces.iter().filter(|(_, f)| f["lost"] == false).map(|(id, _)| *id).collect()
}

/// The nearest other face of each face in `ids`, by L2 distance of the facens in `faces`.
fn top1(faces: &BTreeMap<u64, Value>, ids: &BTreeSet<u64>) -> BTreeMap<u64, u64> {
    let facen = |id: &u64| f32s(&faces[id]["facen"]["values"]);
    let l2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt();
    ids.iter()
        .map(|i| {
            let nearest = ids
                .iter()
                .filter(|j| *j != i)
                .min_by(|a, b| l2(&facen(i), &facen(a)).total_cmp(&l2(&facen(i), &facen(b))))
                .unwrap();
            (*i, *nearest)
        })
        .collect()
}

/// (same, different) pairs among `ids`, by `label` (None: left out).
fn pairs(ids: &BTreeSet<u64>, label: impl Fn(u64) -> Option<String>) -> (u64, u64) {
    let labels: Vec<Option<String>> = ids.iter().map(|id| label(*id)).collect();
    let (mut same, mut different) = (0, 0);
    for i in 0..labels.len() {
        for j in i + 1..labels.len() {
            if let (Some(a), Some(b)) = (&labels[i], &labels[j]) {
                if a == b { same += 1 } else { different += 1 }
            }
        }
    }
    (same, different)
}

/// Headless Chromium, which the test cannot do without.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(output) = Command::new("sh").args(["-c", &format!("command -v {name}")]).output()
            && output.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        }
    }
    panic!(
        "headless Chromium is needed to render the report page and neither `chromium` nor `chromium-browser` is \
         installed: run scripts/setup, or `sudo apt-get install chromium`"
    );
}

/// Chromium headless on `page` with `args`: its stdout.
pub fn run_chromium(page: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element with `id` in `dom`, e.g. `<span id="faces-lost">2</span>`.
pub fn text_of(dom: &str, id: &str) -> String {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    rest[open..open + close].to_string()
}

fn attribute(dom: &str, tag_start: &str, name: &str) -> String {
    let start = dom.find(tag_start).unwrap_or_else(|| panic!("no {tag_start} in the page"));
    let tag = &dom[start..start + dom[start..].find('>').unwrap()];
    let at = tag.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name} in {tag}")) + name.len() + 2;
    tag[at..at + tag[at..].find('"').unwrap()].to_string()
}

#[test]
fn report_shows_what_a_detector_and_model_swap_changes() {
    let uploads = Uploads::new();
    let work = tempfile::tempdir().unwrap();
    let (snap_before, snap_after) = (work.path().join("before.json"), work.path().join("after.json"));

    let (out, _) = uploads.regenerate(&BEFORE_PARAMS);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = uploads.faces();
    let thumbnail =
        |face: &Value| std::fs::read(uploads.files().join(face["thumbnail"].as_str().unwrap())).unwrap();
    let thumbnails_before: BTreeMap<u64, Vec<u8>> =
        before.iter().map(|(id, f)| (*id, thumbnail(f))).collect();
    take_snapshot(&uploads, &snap_before);

    // The swap: re-detection with other settings, and the toy model (16 values, not 128).
    let toy = test_guest("toy-embedder").display().to_string();
    let mut swap = AFTER_PARAMS.to_vec();
    swap.extend(["--model", &toy]);
    let (out, summary) = uploads.regenerate(&swap);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let after = uploads.faces();
    take_snapshot(&uploads, &snap_after);

    // What the face records say.
    let (was, is) = (present(&before), present(&after));
    let kept: BTreeSet<u64> = was.intersection(&is).copied().collect();
    let lost: BTreeSet<u64> = was.difference(&is).copied().collect();
    let gained: BTreeSet<u64> = is.difference(&was).copied().collect();
    assert!(
        !kept.is_empty() && !lost.is_empty() && !gained.is_empty(),
        "kept {kept:?} lost {lost:?} gained {gained:?}"
    );
    assert_eq!(count(&summary, "faces_lost") as usize, lost.len());
    assert_eq!(count(&summary, "faces_new") as usize, gained.len());

    // The snapshots hold every record and the thumbnails as they were when taken.
    let snapshot = read_json(&snap_before);
    assert_eq!(snapshot["format"], "refacen-snapshot");
    let faces = snapshot["faces"].as_array().unwrap();
    assert_eq!(faces.len(), before.len());
    for face in faces {
        let id = face["id"].as_u64().unwrap();
        assert_eq!(face["facen"], before[&id]["facen"]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(face["thumbnail_base64"].as_str().expect("a thumbnail"))
            .unwrap();
        assert_eq!(bytes, thumbnails_before[&id], "face {id}: the thumbnail of the before snapshot");
    }
    let snapshot = read_json(&snap_after);
    assert_eq!(snapshot["faces"].as_array().unwrap().len(), after.len(), "lost faces included");

    // A capped snapshot, by state and files directory: the first photos, all their faces.
    let capped = work.path().join("capped.json");
    let state = uploads.state.display().to_string();
    let files = uploads.files().display().to_string();
    let result = refacen(&[
        "snapshot",
        "--state-dir",
        &state,
        "--files-dir",
        &files,
        "--photos",
        "2",
        "--out",
        &capped.display().to_string(),
    ]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let capped_snapshot = read_json(&capped);
    let capped_photos: BTreeSet<&str> =
        capped_snapshot["photos"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(capped_photos.len(), 2);
    let all_photos: BTreeSet<&str> = after.values().map(|f| f["photo"].as_str().unwrap()).collect();
    assert_eq!(capped_snapshot["photos_in_store"].as_u64().unwrap() as usize, all_photos.len());
    let of_capped = after.values().filter(|f| capped_photos.contains(f["photo"].as_str().unwrap())).count();
    assert_eq!(capped_snapshot["faces"].as_array().unwrap().len(), of_capped);
    assert!(capped_snapshot["faces"].as_array().unwrap().iter().all(|f| f["thumbnail_base64"].is_string()));

    // The report, with identities.
    let report_dir = work.path().join("report");
    let identities = repo().join("tests/fixtures/faces/identities.json");
    let identities = identities.display().to_string();
    let result =
        run_report(&snap_before, &snap_after, &report_dir, &["--identities", &identities, "--top", "5"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let report = read_json(&report_dir.join("report.json"));
    let d = &report["detector"];
    assert_eq!(d["kept"].as_u64().unwrap() as usize, kept.len());
    assert_eq!(d["lost"].as_u64().unwrap() as usize, lost.len());
    assert_eq!(d["gained"].as_u64().unwrap() as usize, gained.len());
    let photos: BTreeSet<&str> =
        before.values().chain(after.values()).map(|f| f["photo"].as_str().unwrap()).collect();
    assert_eq!(d["photos"].as_u64().unwrap() as usize, photos.len());
    for photo in d["per_photo"].as_array().unwrap() {
        let name = photo["photo"].as_str().unwrap();
        let of = |set: &BTreeSet<u64>| -> Vec<u64> {
            set.iter()
                .filter(|id| before.get(id).or(after.get(id)).unwrap()["photo"] == name)
                .copied()
                .collect()
        };
        let ids =
            |v: &Value| -> Vec<u64> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect() };
        let kept_ids: Vec<u64> =
            photo["kept"].as_array().unwrap().iter().map(|k| k["id"].as_u64().unwrap()).collect();
        assert_eq!(kept_ids, of(&kept), "{name}: kept");
        assert_eq!(ids(&photo["lost"]), of(&lost), "{name}: lost");
        assert_eq!(ids(&photo["gained"]), of(&gained), "{name}: gained");
    }
    assert_eq!(report["before"]["detectors"][0]["detector"]["params"]["o-net-thresh"], 0.95);
    // nnd declares min-face-size as a float parameter.
    assert_eq!(report["after"]["detectors"][0]["detector"]["params"]["min-face-size"].as_f64(), Some(80.0));

    let m = &report["model"];
    assert_eq!(m["before_model"]["name"], "dlib-resnet-128");
    assert_eq!(m["before_model"]["facen_size"], 128);
    assert_eq!(m["after_model"]["name"], "toy-embedder");
    assert_eq!(m["after_model"]["facen_size"], 16);
    assert_eq!(m["model_changed"], true);
    assert_eq!(m["faces"].as_u64().unwrap() as usize, kept.len());
    assert_eq!(m["top"].as_u64().unwrap() as usize, 5.min(kept.len() - 1));
    let (top1_before, top1_after) = (top1(&before, &kept), top1(&after, &kept));
    let changed = kept.iter().filter(|id| top1_before[id] != top1_after[id]).count();
    assert_eq!(m["top1_changed"].as_u64().unwrap() as usize, changed);
    for n in m["neighbours"].as_array().unwrap() {
        let id = n["id"].as_u64().unwrap();
        assert_eq!(
            n["before"][0]["id"].as_u64().unwrap(),
            top1_before[&id],
            "face {id}: old model's nearest"
        );
        assert_eq!(n["after"][0]["id"].as_u64().unwrap(), top1_after[&id], "face {id}: new model's nearest");
    }
    let people: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&identities).unwrap()).unwrap();
    let person = |id: u64| {
        let photo = after[&id]["photo"].as_str().unwrap();
        people.get(photo.rsplit('/').next().unwrap()).cloned()
    };
    let (same, different) = pairs(&kept, person);
    assert!(same + different > 0, "pairs of kept faces");
    for side in ["before", "after"] {
        assert_eq!(m[side]["same_pairs"].as_u64().unwrap(), same, "{side}");
        assert_eq!(m[side]["different_pairs"].as_u64().unwrap(), different, "{side}");
        if same > 0 && different > 0 {
            let accuracy = m[side]["best_balanced_accuracy"].as_f64().unwrap();
            assert!((0.5..=1.0).contains(&accuracy), "{side}: {accuracy}");
        }
    }

    // The page, as a browser shows it.
    let page = report_dir.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let images = html.matches("<img ").count();
    assert_eq!(images, 2 * kept.len() + lost.len() + gained.len(), "kept faces twice, the others once");
    for external in ["src=\"http", "href=\"http", "<link", "src=\"//"] {
        assert!(!html.contains(external), "the page reaches out: {external}");
    }
    let dom = run_chromium(&page, &["--dump-dom"]);
    assert_eq!(text_of(&dom, "faces-kept"), kept.len().to_string());
    assert_eq!(text_of(&dom, "faces-lost"), lost.len().to_string());
    assert_eq!(text_of(&dom, "faces-gained"), gained.len().to_string());
    assert_eq!(text_of(&dom, "photos-compared"), photos.len().to_string());
    assert_eq!(text_of(&dom, "faces-compared"), kept.len().to_string());
    assert_eq!(text_of(&dom, "top1-changed"), changed.to_string());
    assert_eq!(attribute(&dom, "<body", "data-images"), images.to_string());
    assert_eq!(
        attribute(&dom, "<body", "data-images-ok"),
        images.to_string(),
        "every thumbnail decodes in the browser"
    );
    assert_eq!(attribute(&dom, "<svg", "id"), "histogram-before");
    assert_eq!(dom.matches("<svg").count(), 2, "a histogram per model");
    let artifacts = repo().join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    run_chromium(&page, &[&format!("--screenshot={}", screenshot.display()), "--window-size=1280,2000"]);
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of the page");

    // Against the capped snapshot only the photos it covers are compared.
    let capped_dir = work.path().join("capped-report");
    let result = run_report(&capped, &snap_after, &capped_dir, &[]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let capped_report = read_json(&capped_dir.join("report.json"));
    assert_eq!(capped_report["detector"]["photos"], 2);
    assert_eq!(capped_report["detector"]["lost"], 0, "the same records on both sides");

    // Cosine, a smaller K and no identities: pairs by photo.
    let result = run_report(&snap_before, &snap_after, &report_dir, &["--metric", "cosine", "--top", "2"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let m = read_json(&report_dir.join("report.json"))["model"].clone();
    assert_eq!(
        (m["metric"].as_str(), m["top"].as_u64(), m["pairs_by"].as_str()),
        (Some("cosine"), Some(2), Some("photos"))
    );
    let (same, different) = pairs(&kept, |id| Some(after[&id]["photo"].as_str().unwrap().to_string()));
    assert_eq!(
        (m["after"]["same_pairs"].as_u64().unwrap(), m["after"]["different_pairs"].as_u64().unwrap()),
        (same, different)
    );
}

#[test]
fn missing_and_damaged_snapshots_are_named() {
    let work = tempfile::tempdir().unwrap();
    let damaged = work.path().join("damaged.json");
    std::fs::write(&damaged, "{\"format\": \"refacen-snapshot\", \"version\": 1, \"faces\": [").unwrap();
    let missing = work.path().join("missing.json");
    let out = work.path().join("r");
    let result = run_report(&damaged, &missing, &out, &[]);
    result.assert_refused(&["damaged.json", "not a refacen snapshot"]);
    let result = run_report(&missing, &damaged, &out, &[]);
    result.assert_refused(&["missing.json", "refacen snapshot"]);

    // A snapshot of a store regenerate never wrote.
    let result = refacen(&[
        "snapshot",
        "--uploads",
        &work.path().join("nowhere").display().to_string(),
        "--out",
        &work.path().join("s.json").display().to_string(),
    ]);
    result.assert_refused(&["run `refacen regenerate` first"]);
}
