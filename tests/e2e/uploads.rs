//! Uploads folders as phones and people fill them: EXIF-rotated photos, names that are not
//! UTF-8, junk files beside the photos, HEIC/AVIF, and photos too large for a detector.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use image::metadata::Orientation;
use serde_json::Value;

use crate::regenerate::{Uploads, count, expected_faces};
use crate::support::{f32s, faces, iou, photo, photos, refacen};

/// Runs a tool the test needs (installed by scripts/setup), failing with that instruction.
fn tool<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(program: &str, args: &[S]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}; scripts/setup installs it"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The stored pixels a camera writes with EXIF orientation `value` for `upright`: the
/// inverse of the transform a viewer applies.
fn stored_frame(upright: &image::RgbImage, value: u8) -> image::RgbImage {
    use image::imageops::{flip_horizontal, flip_vertical, rotate90, rotate180, rotate270};
    match value {
        1 => upright.clone(),
        2 => flip_horizontal(upright),
        3 => rotate180(upright),
        4 => flip_vertical(upright),
        // 5 (transpose) and 7 (transverse) are their own inverses.
        5 => flip_horizontal(&rotate90(upright)),
        6 => rotate270(upright),
        7 => flip_horizontal(&rotate270(upright)),
        8 => rotate90(upright),
        _ => unreachable!("orientations are 1-8"),
    }
}

/// `name` in `dir`: `upright` stored in the frame of EXIF orientation `value`, as a JPEG
/// whose Orientation tag exiftool sets to `value`.
fn rotated_jpeg(dir: &Path, name: &str, upright: &image::RgbImage, value: u8) -> PathBuf {
    let path = dir.join(name);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&stored_frame(upright, value))
        .unwrap();
    std::fs::write(&path, jpeg).unwrap();
    let tag = format!("-Orientation={value}");
    tool("exiftool", &["-q", "-n", "-overwrite_original", &tag, &path.display().to_string()]);
    path
}

fn detect_json(paths: &[&Path], extra: &[&str]) -> Vec<Value> {
    let mut args: Vec<String> = vec!["detect".into(), "--json".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let out = refacen(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json_lines()
}

fn boxes(line: &Value) -> Vec<Vec<f32>> {
    faces(line).iter().map(|f| f32s(&f["bbox"])).collect()
}

/// The box of the face `line` scores highest.
fn main_face(line: &Value) -> Vec<f32> {
    let best = faces(line)
        .iter()
        .max_by(|a, b| a["score"].as_f64().unwrap().total_cmp(&b["score"].as_f64().unwrap()));
    f32s(&best.unwrap_or_else(|| panic!("no face in {line}"))["bbox"])
}

/// Asserts that one of `found` overlaps `expected` at least `min_iou`.
fn assert_has_box(found: &[Vec<f32>], expected: &[f32], min_iou: f32, what: &str) {
    let best = found.iter().map(|a| iou(a, expected)).fold(0.0, f32::max);
    assert!(
        best > min_iou,
        "{what}: nothing found overlaps {expected:?} by {min_iou} (best {best}): {found:?}"
    );
}

/// Asserts that `found` and `expected` hold the same boxes (in any order), each pair
/// overlapping at least `min_iou`.
fn assert_same_boxes(found: &[Vec<f32>], expected: &[Vec<f32>], min_iou: f32, what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: {found:?} vs {expected:?}");
    for b in expected {
        let best = found.iter().map(|a| iou(a, b)).fold(0.0, f32::max);
        assert!(best > min_iou, "{what}: nothing found overlaps {b:?} by {min_iou} (best {best}): {found:?}");
    }
}

#[test]
fn exif_orientation_is_applied_for_all_eight_values() {
    let dir = tempfile::tempdir().unwrap();
    let upright = image::open(photo("obama.jpg")).unwrap().into_rgb8();
    let mut tagged = Vec::new();
    let mut references = Vec::new();
    for value in 1..=8u8 {
        let jpeg = rotated_jpeg(dir.path(), &format!("obama-{value}.jpg"), &upright, value);
        // The reference: the same decoded pixels (libjpeg-turbo, as refacen decodes), turned
        // upright here and saved losslessly without any tag.
        let raw = turbojpeg::decompress(&std::fs::read(&jpeg).unwrap(), turbojpeg::PixelFormat::RGB).unwrap();
        let raw = image::RgbImage::from_raw(raw.width as u32, raw.height as u32, raw.pixels).unwrap();
        let mut turned = image::DynamicImage::ImageRgb8(raw);
        turned.apply_orientation(Orientation::from_exif(value).unwrap());
        let reference = dir.path().join(format!("reference-{value}.png"));
        turned.save(&reference).unwrap();
        tagged.push(jpeg);
        references.push(reference);
    }
    let paths: Vec<&Path> = tagged.iter().chain(&references).map(PathBuf::as_path).collect();
    let lines = detect_json(&paths, &[]);
    let plain = detect_json(&[Path::new(&photo("obama.jpg"))], &[]);
    for value in 1..=8usize {
        let (line, reference) = (&lines[value - 1], &lines[8 + value - 1]);
        assert_eq!(line["orientation"], value, "{line}");
        let found = boxes(line);
        assert!(!found.is_empty(), "orientation {value}: no face found: {line}");
        let what = format!("orientation {value} vs the pixel-rotated photo");
        assert_same_boxes(&found, &boxes(reference), 0.99, &what);
        // The displayed frame is the upright photo's: its face is found where it is there.
        assert_has_box(&found, &main_face(&plain[0]), 0.8, &format!("orientation {value} vs the original"));
    }
}

#[test]
fn regenerate_stores_upright_faces_and_photos_from_before_are_redetected_once() {
    let uploads = Uploads::new();
    let upright = image::open(photo("obama.jpg")).unwrap().into_rgb8();
    for value in [3u8, 6, 8] {
        rotated_jpeg(&uploads.dir, &format!("phone-{value}.jpg"), &upright, value);
    }
    let (out, summary) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "done"), 9);
    let faces = uploads.faces();
    let best = |photo: &str| {
        let of_photo = faces.values().filter(|f| f["photo"] == photo);
        of_photo.max_by(|a, b| a["score"].as_f64().unwrap().total_cmp(&b["score"].as_f64().unwrap())).unwrap()
    };
    let chip_of =
        |face: &Value| image::open(uploads.files().join(face["normalized"].as_str().unwrap())).unwrap();
    let twin = best("obama.jpg");
    for value in [3u8, 6, 8] {
        let photo = format!("phone-{value}.jpg");
        for face in faces.values().filter(|f| f["photo"] == photo.as_str()) {
            assert_eq!(face["orientation"], value, "{face}");
        }
        let face = best(&photo);
        assert!(iou(&f32s(&face["bbox"]), &f32s(&twin["bbox"])) > 0.8, "{face} vs {twin}");
        // The normalized face is upright: close to the original's, not turned.
        let (a, b) = (chip_of(face).into_rgb8(), chip_of(twin).into_rgb8());
        let diff: f64 =
            a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>()
                / a.as_raw().len() as f64;
        assert!(
            diff < 12.0,
            "orientation {value}: chip differs from the upright one by {diff:.1} per channel"
        );
    }
    assert!(faces.values().filter(|f| f["photo"] == "obama.jpg").all(|f| f["orientation"] == 1));

    // Records from a refacen that ignored orientation have no `orientation`: strip it.
    strip_orientation(&uploads.state.join("faces.redb"));
    let (out, summary) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "done"), 9, "every photo is detected again once: {summary}");
    assert_eq!(count(&summary, "faces_lost"), 0, "{summary}");
    assert_eq!(uploads.faces().keys().collect::<Vec<_>>(), faces.keys().collect::<Vec<_>>());
    let (out, summary) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "up_to_date"), 9, "then reruns change nothing: {summary}");
}

/// Removes `orientation` from every photo and face record of an embedded store, as records
/// written before refacen applied orientation are.
fn strip_orientation(store: &Path) {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    assert!(store.is_file(), "{} is the embedded store", store.display());
    let db = redb::Database::open(store).unwrap();
    let strip = |bytes: &[u8]| {
        let mut record: ciborium::Value = ciborium::from_reader(bytes).unwrap();
        let ciborium::Value::Map(fields) = &mut record else { panic!("records are maps") };
        let before = fields.len();
        fields.retain(|(k, _)| k.as_text() != Some("orientation"));
        assert_eq!(fields.len(), before - 1, "the record had an orientation");
        let mut out = Vec::new();
        ciborium::into_writer(&record, &mut out).unwrap();
        out
    };
    let photos: TableDefinition<&str, &[u8]> = TableDefinition::new("photos");
    let faces: TableDefinition<u64, &[u8]> = TableDefinition::new("faces");
    let (photo_rows, face_rows) = {
        let txn = db.begin_read().unwrap();
        let p: Vec<(String, Vec<u8>)> = txn
            .open_table(photos)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_string(), strip(v.value()))
            })
            .collect();
        let f: Vec<(u64, Vec<u8>)> = txn
            .open_table(faces)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), strip(v.value()))
            })
            .collect();
        (p, f)
    };
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(photos).unwrap();
        for (k, v) in &photo_rows {
            table.insert(k.as_str(), v.as_slice()).unwrap();
        }
        let mut table = txn.open_table(faces).unwrap();
        for (k, v) in &face_rows {
            table.insert(*k, v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn junk_files_are_skipped_not_failed_and_listed_on_request() {
    let uploads = Uploads::new();
    let junk: [(&str, &[u8]); 7] = [
        (".DS_Store", b"\0\0\0\x01Bud1\0\0\x10\0\0\0\x08\0"),
        ("2024/Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\0\0\0\0"),
        ("IMG_0001.MOV", b"\0\0\0\x14ftypqt  \0\0\0\0qt  \0\0\0\x08wide"),
        ("._IMG_0001.JPG", b"\0\x05\x16\x07\0\x02\0\0Mac OS X        "),
        ("notes.txt", b"holiday photos\n"),
        // No telling name: known by its content.
        ("README", b"these are our photos\n"),
        ("clip", b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2"),
    ];
    for (name, bytes) in junk {
        std::fs::write(uploads.dir.join(name), bytes).unwrap();
    }
    let (out, summary) = uploads.regenerate(&["--list-skipped"]);
    assert_eq!(out.code, 0, "junk fails nothing: {}", out.stderr);
    assert_eq!(count(&summary, "failed"), 0, "{summary}");
    assert_eq!(count(&summary, "skipped"), junk.len() as u64, "{summary}");
    assert_eq!(count(&summary, "done"), 6, "{summary}");
    assert!(out.stderr.contains(&format!("skipped: {} not an image", junk.len())), "{}", out.stderr);
    for (name, _) in junk {
        assert!(
            out.stderr.lines().any(|l| l.starts_with("skipped: ") && l.contains(name)),
            "{name} is not listed: {}",
            out.stderr
        );
    }
    // Without --list-skipped they are counted, not named; a rerun is as clean.
    let (out, summary) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "skipped"), junk.len() as u64);
    assert_eq!(count(&summary, "up_to_date"), 6);
    assert!(!out.stderr.contains("notes.txt"), "{}", out.stderr);

    // `detect` given junk skips it too, and exits 0.
    let out = refacen(&[
        "detect",
        "--json",
        &uploads.dir.join("notes.txt").display().to_string(),
        &uploads.dir.join("IMG_0001.MOV").display().to_string(),
        &photo("biden.jpg"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines[0]["skipped"], "not an image", "{}", lines[0]);
    assert_eq!(lines[1]["skipped"], "not an image", "{}", lines[1]);
    assert_eq!(faces(&lines[2]).len(), 1);
    assert!(out.stderr.contains("skipped: 2 not an image"), "{}", out.stderr);
}

#[test]
fn names_that_are_not_utf8_or_hold_control_characters_are_kept_apart_and_settle() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("uploads");
    std::fs::create_dir_all(&dir).unwrap();
    let name = |bytes: &[u8]| dir.join(std::ffi::OsStr::from_bytes(bytes));
    std::fs::copy(photos().join("biden.jpg"), name(b"col\xff.jpg")).unwrap();
    std::fs::copy(photos().join("obama2.jpg"), name(b"col\xfe.jpg")).unwrap();
    std::fs::copy(photos().join("obama3.jpg"), name(b"line\nbreak.jpg")).unwrap();
    let state = root.path().join("state");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = ["regenerate", "--json", "--uploads"].map(String::from).to_vec();
        a.extend([dir.display().to_string(), "--state-dir".into(), state.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let out = refacen(&args(&[]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary = out.json_lines().pop().unwrap();
    assert_eq!(count(&summary, "done"), 3, "{summary}");
    let list = refacen(&["faces", "--json", "--state-dir", &state.display().to_string()]);
    let records: BTreeMap<String, Value> =
        list.json_lines().into_iter().map(|f| (f["photo"].as_str().unwrap().to_string(), f)).collect();
    let keys: Vec<&str> = records.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["col\\xfe.jpg//636f6cfe2e6a7067", "col\\xff.jpg//636f6cff2e6a7067", "line\nbreak.jpg"],
        "one record per file, keyed by its exact bytes"
    );
    for _ in 0..2 {
        let out = refacen(&args(&[]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let summary = out.json_lines().pop().unwrap();
        assert_eq!(count(&summary, "up_to_date"), 3, "a rerun with no change changes nothing: {summary}");
        assert_eq!(count(&summary, "faces_lost"), 0, "{summary}");
        assert_eq!(count(&summary, "faces_new"), 0, "{summary}");
    }
    // Plain output: one line per face, control characters escaped.
    let plain = refacen(&["faces", "--state-dir", &state.display().to_string()]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert_eq!(plain.stdout.lines().count(), 3, "{}", plain.stdout);
    assert!(plain.stdout.contains("line\\nbreak.jpg"), "{}", plain.stdout);
    assert!(
        plain.stdout.contains("col\\xff.jpg") && plain.stdout.contains("col\\xfe.jpg"),
        "{}",
        plain.stdout
    );
    assert!(!plain.stdout.contains('\u{fffd}'), "{}", plain.stdout);
}

#[test]
fn heic_and_avif_photos_are_read_upright() {
    let dir = tempfile::tempdir().unwrap();
    let mut made = Vec::new();
    for extension in ["heic", "avif"] {
        let out = dir.path().join(format!("obama.{extension}"));
        tool("heif-enc", &["-q", "90", "-o", &out.display().to_string(), &photo("obama.jpg")]);
        made.push(out);
    }
    let jpeg = PathBuf::from(photo("obama.jpg"));
    let lines = detect_json(&[&made[0], &made[1], &jpeg], &[]);
    // Lossy re-encoding may lose obama.jpg's small, borderline second face; not its main one.
    let expected = main_face(&lines[2]);
    for line in &lines[..2] {
        assert_has_box(&boxes(line), &expected, 0.8, &format!("{} vs the JPEG", line["image"]));
    }
    // A HEIC cut short is a damaged photo.
    let heic = std::fs::read(&made[0]).unwrap();
    let truncated = dir.path().join("truncated.heic");
    std::fs::write(&truncated, &heic[..heic.len() / 2]).unwrap();
    let out = refacen(&["detect", "--json", truncated.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.json_lines()[0]["cause"], "corrupt image", "{}", out.stdout);

    // In Uploads, beside the JPEGs.
    let uploads = Uploads::new();
    for path in &made {
        std::fs::copy(path, uploads.dir.join(path.file_name().unwrap())).unwrap();
    }
    let (out, summary) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "done"), 8, "{summary}");
    let heif_faces = faces(&lines[0]).len() + faces(&lines[1]).len();
    assert_eq!(count(&summary, "faces_new") as usize, expected_faces() + heif_faces, "{summary}");
}

#[test]
fn failures_keep_distinct_causes_and_unsupported_formats_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let obama = std::fs::read(photo("obama.jpg")).unwrap();
    let files: [(&str, Vec<u8>, &str); 5] = [
        ("half.jpg", obama[..obama.len() / 2].to_vec(), "corrupt image"),
        ("renamed.jpg", b"a text file named like a photo\n".to_vec(), "corrupt image"),
        (
            "photo.jxl",
            b"\xff\x0a\xfa\x7f\x01\x90\x08\x06\x01\x00\x48\x00\x4b\x38".to_vec(),
            "unsupported format",
        ),
        ("scan.pgm", b"P5\n2 2\n255\n\x00\x40\x80\xff".to_vec(), "unsupported format"),
        ("bomb.jpg", claiming_jpeg(60_000, 60_000), "too large"),
    ];
    let mut args = vec!["detect".to_string(), "--json".into()];
    for (name, bytes, _) in &files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        args.push(path.display().to_string());
    }
    args.push(photo("biden.jpg"));
    let out = refacen(&args);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines = out.json_lines();
    for ((name, _, cause), line) in files.iter().zip(&lines) {
        assert_eq!(line["cause"], *cause, "{name}: {line}");
        assert!(line["error"].as_str().unwrap().contains(name), "{line}");
    }
    assert!(
        lines[2]["error"].as_str().unwrap().contains("JPEG XL is not a supported format"),
        "{}",
        lines[2]
    );
    assert_eq!(faces(&lines[5]).len(), 1);
}

/// A small JPEG whose frame header claims `width`x`height`.
fn claiming_jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut bytes).encode_image(&image::RgbImage::new(64, 64)).unwrap();
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// A photo of `megapixels` MP: obama.jpg scaled up, as a JPEG.
fn huge_photo(dir: &Path, megapixels: f64) -> (PathBuf, f32) {
    let small = image::open(photo("obama.jpg")).unwrap().into_rgb8();
    let factor = (megapixels * 1e6 / (small.width() as f64 * small.height() as f64)).sqrt() as f32;
    let (w, h) = ((small.width() as f32 * factor) as u32, (small.height() as f32 * factor) as u32);
    let big = image::imageops::resize(&small, w, h, image::imageops::FilterType::Triangle);
    let path = dir.join("huge.jpg");
    big.save(&path).unwrap();
    (path, w as f32 / small.width() as f32)
}

#[test]
fn huge_photos_are_scaled_down_for_detection_or_refused_with_the_option_that_helps() {
    let dir = tempfile::tempdir().unwrap();
    let (huge, factor) = huge_photo(dir.path(), 40.0);
    let small = detect_json(&[Path::new(&photo("obama.jpg"))], &[]);
    let expected: Vec<f32> = main_face(&small[0]).iter().map(|v| v * factor).collect();
    let check = |line: &Value| {
        assert_has_box(&boxes(line), &expected, 0.7, "the huge photo vs the small one, scaled")
    };
    // --max-size: scaled down, boxes in the full-size photo.
    let started = std::time::Instant::now();
    let line = &detect_json(&[&huge], &["--max-size", "2000"])[0];
    println!("huge photo: --max-size 2000: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(f32s(&line["scaled_to"]).iter().cloned().fold(0.0, f32::max), 2000.0, "{line}");
    check(line);
    // A detector with too little memory for the full size (nnd holds the photo's 120 MB of
    // RGB): scaled down until it fits.
    let started = std::time::Instant::now();
    let line = &detect_json(&[&huge], &["--guest-memory-mb", "96"])[0];
    println!(
        "huge photo: --guest-memory-mb 96: {:.1} s, scaled to {}",
        started.elapsed().as_secs_f64(),
        line["scaled_to"]
    );
    assert!(line["scaled_to"].is_array(), "{line}");
    check(line);
    // Too little memory for the networks' work in the host (P-Net on the largest level of the
    // pyramid, made by the host from the photo): scaled down as well.
    let line = &detect_json(&[&huge], &["--guest-nn-memory-mb", "128"])[0];
    assert!(line["scaled_to"].is_array(), "{line}");
    check(line);
    // Asked to detect at full size with too little memory: the size, the limit, the option.
    let out =
        refacen(&["detect", "--guest-memory-mb", "96", "--max-size", "100000", &huge.display().to_string()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let size = format!(
        "{}x{}",
        image::image_dimensions(&huge).unwrap().0,
        image::image_dimensions(&huge).unwrap().1
    );
    for needed in [size.as_str(), "too large", "96 MiB", "--max-size", "--guest-memory-mb"] {
        assert!(out.stderr.contains(needed), "`{needed}` missing: {}", out.stderr);
    }
    assert!(out.stderr.contains("1 too large"), "{}", out.stderr);

    // regenerate: detected scaled down, normalized from the full-size photo.
    let uploads = Uploads::new();
    std::fs::rename(&huge, uploads.dir.join("huge.jpg")).unwrap();
    let (out, summary) = uploads.regenerate(&["--guest-memory-mb", "96"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((count(&summary, "done"), count(&summary, "scaled_down")), (7, 1), "{summary}");
    assert!(out.stderr.contains("1 photo(s) scaled down for detection"), "{}", out.stderr);
    let stored = uploads.faces();
    let of_huge: Vec<Vec<f32>> =
        stored.values().filter(|f| f["photo"] == "huge.jpg").map(|f| f32s(&f["bbox"])).collect();
    assert_has_box(&of_huge, &expected, 0.7, "the stored box, in the full-size photo");
}

#[test]
fn mongodb_keeps_orientation_and_exact_names_and_reads_records_from_before() {
    use crate::stores::{Stores, strings};
    let stores = Stores::start(0);
    let mongo_args = stores.mongo_args();
    let uploads = Uploads::new();
    let upright = image::open(photo("obama2.jpg")).unwrap().into_rgb8();
    rotated_jpeg(&uploads.dir, "phone-6.jpg", &upright, 6);
    let name = |bytes: &[u8]| uploads.dir.join(std::ffi::OsStr::from_bytes(bytes));
    std::fs::copy(photos().join("biden.jpg"), name(b"col\xff.jpg")).unwrap();
    std::fs::copy(photos().join("obama3.jpg"), name(b"col\xfe.jpg")).unwrap();
    let (out, summary) = uploads.regenerate(&strings(&mongo_args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "done"), 9, "{summary}");
    let faces = stores.faces();
    let photos_of = |faces: &BTreeMap<u64, Value>| -> std::collections::BTreeSet<String> {
        faces.values().map(|f| f["photo"].as_str().unwrap().to_string()).collect()
    };
    let keys = photos_of(&faces);
    assert!(
        keys.contains("col\\xff.jpg//636f6cff2e6a7067") && keys.contains("col\\xfe.jpg//636f6cfe2e6a7067"),
        "{keys:?}"
    );
    let rotated: Vec<&Value> = faces.values().filter(|f| f["photo"] == "phone-6.jpg").collect();
    assert_eq!(rotated.len(), 1, "the face of the rotated photo is found upright");
    assert_eq!(rotated[0]["orientation"], 6);

    // Documents written before refacen applied orientation have no such field.
    let uri = mongo_args[1].clone();
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let db = client.database(&mongo_args[3]);
        for collection in ["photos", "faces"] {
            let collection = db.collection::<mongodb::bson::Document>(collection);
            let unset = mongodb::bson::doc! { "$unset": { "orientation": "" } };
            collection.update_many(mongodb::bson::doc! {}, unset).await.unwrap();
        }
    });
    let old = stores.faces();
    assert!(old.values().all(|f| f["orientation"].is_null()), "records from before read back");
    let (out, summary) = uploads.regenerate(&strings(&mongo_args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "done"), 9, "detected again once: {summary}");
    assert_eq!((count(&summary, "faces_new"), count(&summary, "faces_lost")), (0, 0), "{summary}");
    let (out, summary) = uploads.regenerate(&strings(&mongo_args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "up_to_date"), 9, "then settled: {summary}");
    let after = stores.faces();
    assert_eq!(after.keys().collect::<Vec<_>>(), faces.keys().collect::<Vec<_>>());
    assert_eq!(photos_of(&after), keys);
}

#[test]
fn a_guest_that_fails_on_a_large_photo_is_not_blamed_on_the_size() {
    // The hostile guest allocates without end on photos whose top-left pixel is pure red; the
    // red corner stays pure red however far the photo is scaled down.
    let dir = tempfile::tempdir().unwrap();
    let mut large = image::RgbImage::from_pixel(3000, 2000, image::Rgb([90, 120, 150]));
    for (x, y) in (0..64).flat_map(|x| (0..64).map(move |y| (x, y))) {
        large.put_pixel(x, y, image::Rgb([255, 0, 0]));
    }
    let path = dir.path().join("large.png");
    large.save(&path).unwrap();
    let hostile = crate::support::test_guest("hostile").display().to_string();
    let args =
        ["detect", "--json", "--detector", &hostile, "--param", "mode=alloc", "--guest-memory-mb", "256"];
    let out = refacen(&[&args[..], &[path.to_str().unwrap()]].concat());
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = &out.json_lines()[0];
    assert_eq!(line["cause"], "guest memory limit", "{line}");
    assert!(line["error"].as_str().unwrap().contains("over the limit of 256 MiB"), "{line}");
}
