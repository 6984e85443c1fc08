//! The report as one self-contained HTML page: inline CSS, thumbnails as `data:` URIs, plots
//! as inline SVG, no network. Figures carry ids and `data-` attributes (`#faces-lost`,
//! `[data-photo]`, `body[data-images]`) so that a browser test can read them; a few lines of
//! inline script set `body[data-images-ok]` to the number of thumbnails that decoded.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use super::{
    DetectorUse, FaceNeighbours, ModelComparison, ModelUse, Report, Separation, Snapshot, SnapshotFace,
    SnapshotSummary, svg,
};
use refacen_store::FaceId;

/// Photos drawn on the page (changed ones come first); report.json has them all.
pub const MAX_PHOTOS_SHOWN: usize = 1000;
/// Faces whose neighbours are listed on the page (top-1 changes first); report.json has all.
pub const MAX_NEIGHBOUR_ROWS: usize = 500;

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }
h3 { font-size: 14px; margin: 16px 0 6px; } h3 small { font-weight: normal; color: #666; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
code { font-size: 12px; }
.totals span, .figures span { font-weight: bold; }
.faces { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; padding: 4px; border: 2px solid #ddd; border-radius: 4px; text-align: center; }
figure.kept { border-color: #adb5bd; } figure.lost { border-color: #c92a2a; } figure.gained { border-color: #2b8a3e; }
figure img { height: 96px; display: inline-block; vertical-align: middle; }
figure .absent { display: inline-block; width: 72px; height: 96px; line-height: 96px; color: #aaa; background: #f8f8f8; vertical-align: middle; }
figcaption { font-size: 12px; }
.lost figcaption { color: #c92a2a; } .gained figcaption { color: #2b8a3e; }
.t { display: inline-block; width: 40px; height: 48px; background: #eee center / cover no-repeat; vertical-align: middle; }
.n { display: inline-block; margin-right: 6px; font-size: 11px; text-align: center; }
tr.changed td:first-child { border-left: 4px solid #c92a2a; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.note { color: #666; font-size: 12px; }
"#;

const SCRIPT: &str = r#"
window.addEventListener('load', function () {
  var ok = 0;
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (img.complete && img.naturalWidth > 0) ok++;
  }
  document.body.dataset.imagesOk = String(ok);
});
"#;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn data_uri(base64: &str) -> String {
    let mime = if base64.starts_with("iVBOR") { "image/png" } else { "image/jpeg" };
    format!("data:{mime};base64,{base64}")
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn utc(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest / 60 % 60, rest % 60)
}

fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

fn detector_cell(uses: &[DetectorUse]) -> String {
    uses_cell(
        uses,
        "none",
        |u| u.faces,
        |u| {
            let d = &u.detector;
            let params: Vec<String> = d.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "<b>{}</b> {} <code>{}</code><br><code>{}</code>",
                escape(&d.name),
                escape(&d.version),
                escape(short(&d.sha256)),
                escape(&params.join(" "))
            )
        },
    )
}

fn model_cell(uses: &[ModelUse]) -> String {
    uses_cell(
        uses,
        "no facens",
        |u| u.faces,
        |u| {
            let m = &u.model;
            format!(
                "<b>{}</b> {} <code>{}</code>, {} values",
                escape(&m.name),
                escape(&m.version),
                escape(short(&m.sha256)),
                m.facen_size
            )
        },
    )
}

/// A cell listing the detectors or models of a snapshot (`none` when it used none), one
/// `describe`d per rule, each with its count of faces when there are several.
fn uses_cell<U, N: std::fmt::Display>(
    uses: &[U],
    none: &str,
    faces: impl Fn(&U) -> N,
    describe: impl Fn(&U) -> String,
) -> String {
    if uses.is_empty() {
        return format!("<td>{none}</td>");
    }
    let mut cell = String::from("<td>");
    for (i, u) in uses.iter().enumerate() {
        if i > 0 {
            cell.push_str("<hr>");
        }
        cell.push_str(&describe(u));
        if uses.len() > 1 {
            let _ = write!(cell, "<br><span class=note>{} faces</span>", faces(u));
        }
    }
    cell.push_str("</td>");
    cell
}

fn header(out: &mut String, report: &Report) {
    let (b, a) = (&report.before, &report.after);
    let row = |name: &str, id: &str, f: &dyn Fn(&SnapshotSummary) -> String| {
        format!(
            "<tr><th>{name}</th><td id=\"before-{id}\">{}</td><td id=\"after-{id}\">{}</td></tr>",
            f(b),
            f(a)
        )
    };
    out.push_str("<table class=\"provenance\"><tr><th></th><th>before</th><th>after</th></tr>");
    out.push_str(&row("snapshot", "file", &|s| escape(&s.file)));
    out.push_str(&row("taken", "taken", &|s| utc(s.taken_at)));
    out.push_str(&row("face store", "store", &|s| escape(&s.store)));
    let _ = write!(
        out,
        "<tr><th>detector</th>{}{}</tr><tr><th>model</th>{}{}</tr>",
        detector_cell(&b.detectors),
        detector_cell(&a.detectors),
        model_cell(&b.models),
        model_cell(&a.models)
    );
    out.push_str(&row("photos", "photos", &|s| {
        if s.photos < s.photos_in_store {
            format!("{} of {} (capped)", s.photos, s.photos_in_store)
        } else {
            s.photos.to_string()
        }
    }));
    out.push_str(&row("face records", "faces", &|s| s.faces.to_string()));
    out.push_str(&row("faces present", "faces-present", &|s| s.faces_present.to_string()));
    out.push_str(&row("marked lost", "faces-marked-lost", &|s| s.faces_marked_lost.to_string()));
    out.push_str(&row("with facens", "faces-with-facens", &|s| s.faces_with_facens.to_string()));
    out.push_str("</table>");
}

struct Faces<'a> {
    before: HashMap<FaceId, &'a SnapshotFace>,
    after: HashMap<FaceId, &'a SnapshotFace>,
    images: usize,
}

impl Faces<'_> {
    fn img(&mut self, face: Option<&SnapshotFace>, side: &str) -> String {
        match face.and_then(|f| f.thumbnail_base64.as_deref().map(|t| (f.record.id, t))) {
            Some((id, thumbnail)) => {
                self.images += 1;
                format!(
                    "<img data-side=\"{side}\" data-face-id=\"{id}\" alt=\"face {id} {side}\" src=\"{}\">",
                    data_uri(thumbnail)
                )
            }
            None => format!("<span class=\"absent\" data-side=\"{side}\">no thumbnail</span>"),
        }
    }
}

fn detector_section(out: &mut String, report: &Report, faces: &mut Faces) {
    let d = &report.detector;
    let _ = write!(
        out,
        "<section id=\"detector\"><h2>Detector: faces kept, lost and gained</h2>\
         <p class=\"totals\" data-kept=\"{}\" data-lost=\"{}\" data-gained=\"{}\">Photos compared \
         <span id=\"photos-compared\">{}</span>, with changes <span id=\"photos-changed\">{}</span>. \
         Faces kept <span id=\"faces-kept\">{}</span>, lost <span id=\"faces-lost\">{}</span>, \
         gained <span id=\"faces-gained\">{}</span>.</p>\
         <p class=\"note\">Kept: the face (its id) is present in both snapshots, shown before | after. Lost: present \
         before, lost or absent after. Gained: absent or lost before, present after.</p>",
        d.kept, d.lost, d.gained, d.photos, d.photos_changed, d.kept, d.lost, d.gained
    );
    for photo in d.per_photo.iter().take(MAX_PHOTOS_SHOWN) {
        let _ = write!(
            out,
            "<div class=\"photo\" data-photo=\"{}\" data-kept=\"{}\" data-lost=\"{}\" data-gained=\"{}\">\
             <h3>{} <small>kept {} · lost {} · gained {}</small></h3><div class=\"faces\">",
            escape(&photo.photo),
            photo.kept.len(),
            photo.lost.len(),
            photo.gained.len(),
            escape(&photo.photo),
            photo.kept.len(),
            photo.lost.len(),
            photo.gained.len()
        );
        for kept in &photo.kept {
            let (b, a) = (faces.before.get(&kept.id).copied(), faces.after.get(&kept.id).copied());
            let caption = format!(
                "kept · box IoU {:.2} · score {:.3}→{:.3}",
                kept.box_iou, kept.score_before, kept.score_after
            );
            face_figure(out, "kept", kept.id, &faces.img(b, "before"), &faces.img(a, "after"), &caption);
        }
        for &id in &photo.lost {
            let b = faces.before.get(&id).copied();
            face_figure(out, "lost", id, &faces.img(b, "before"), ABSENT, "lost");
        }
        for &id in &photo.gained {
            let a = faces.after.get(&id).copied();
            face_figure(out, "gained", id, ABSENT, &faces.img(a, "after"), "gained");
        }
        out.push_str("</div></div>");
    }
    end_section(out, d.per_photo.len(), MAX_PHOTOS_SHOWN, "photos (without changes first)");
}

/// Where a face is missing on one side of a before | after figure.
const ABSENT: &str = "<span class=\"absent\"></span>";

/// A face as before | after (`kind`: kept, lost or gained), captioned `#id caption`.
fn face_figure(out: &mut String, kind: &str, id: FaceId, before: &str, after: &str, caption: &str) {
    let _ = write!(
        out,
        "<figure class=\"face {kind}\" data-face-id=\"{id}\">{before}{after}<figcaption>#{id} {caption}</figcaption></figure>"
    );
}

/// Closes a section that listed at most `shown` of `total` rows, saying where the rest are.
fn end_section(out: &mut String, total: usize, shown: usize, rows: &str) {
    if total > shown {
        let _ = write!(out, "<p class=\"note\">{} more {rows} are in report.json.</p>", total - shown);
    }
    out.push_str("</section>");
}

fn fmt_opt<T: std::fmt::Display>(value: Option<T>, f: impl Fn(T) -> String) -> String {
    value.map_or("–".into(), f)
}

fn separation_rows(out: &mut String, m: &ModelComparison) {
    let row = |name: &str, id: &str, f: &dyn Fn(&Separation) -> String| {
        format!(
            "<tr><th>{name}</th><td id=\"before-{id}\">{}</td><td id=\"after-{id}\">{}</td></tr>",
            f(&m.before),
            f(&m.after)
        )
    };
    let _ = write!(
        out,
        "<table class=\"separation\"><tr><th></th><th>before: {}</th><th>after: {}</th></tr>",
        escape(&m.before_model.name),
        escape(&m.after_model.name)
    );
    out.push_str(&row("same pairs", "same-pairs", &|s| s.same_pairs.to_string()));
    out.push_str(&row("different pairs", "different-pairs", &|s| s.different_pairs.to_string()));
    out.push_str(&row("mean distance, same", "mean-same", &|s| fmt_opt(s.mean_same, |v| format!("{v:.4}"))));
    out.push_str(&row("mean distance, different", "mean-different", &|s| {
        fmt_opt(s.mean_different, |v| format!("{v:.4}"))
    }));
    out.push_str(&row("best threshold", "threshold", &|s| fmt_opt(s.best_threshold, |v| format!("{v:.4}"))));
    out.push_str(&row("balanced accuracy at it", "accuracy", &|s| {
        fmt_opt(s.best_balanced_accuracy, |v| format!("{v:.3}"))
    }));
    out.push_str(&row("AUC", "auc", &|s| fmt_opt(s.auc, |v| format!("{v:.3}"))));
    out.push_str("</table>");
}

fn neighbour_cell(list: &[super::Neighbour], other: &[super::Neighbour]) -> String {
    let mut cell = String::from("<td>");
    for n in list {
        let shared = other.iter().any(|o| o.id == n.id);
        let _ = write!(
            cell,
            "<span class=\"n\" data-face-id=\"{}\"{}><span class=\"t f{}\"></span><br>#{} {:.3}</span>",
            n.id,
            if shared { "" } else { " style=\"color:#c92a2a\"" },
            n.id,
            n.id,
            n.distance
        );
    }
    cell.push_str("</td>");
    cell
}

fn model_section(out: &mut String, m: &ModelComparison, thumbnail_css: &mut BTreeSet<FaceId>) {
    let same = if m.pairs_by == "identities" { "same person" } else { "same photo" };
    let _ = write!(
        out,
        "<section id=\"model\" data-model-changed=\"{}\"><h2>Model: nearest neighbours and separation</h2>\
         <p>Before <b>{}</b> {} ({} values), after <b>{}</b> {} ({} values); {} distance; each model compared only with itself.</p>\
         <p class=\"figures\">Faces compared <span id=\"faces-compared\">{}</span>{}. \
         Top-1 neighbour changed for <span id=\"top1-changed\">{}</span>; mean top-<span id=\"top-k\">{}</span> overlap \
         <span id=\"mean-topk-overlap\">{}</span>.</p>",
        m.model_changed,
        escape(&m.before_model.name),
        escape(&m.before_model.version),
        m.before_model.facen_size,
        escape(&m.after_model.name),
        escape(&m.after_model.version),
        m.after_model.facen_size,
        m.metric,
        m.faces,
        if m.faces_excluded > 0 {
            format!(" ({} kept faces left out: a facen missing or of another model)", m.faces_excluded)
        } else {
            String::new()
        },
        m.top1_changed,
        m.top,
        fmt_opt(m.mean_topk_overlap, |v| format!("{v:.3}"))
    );
    let _ = write!(
        out,
        "<h3>Distances of {same} pairs against other pairs</h3><p class=\"note\">Pairs among {} faces{}, by {}. \
         Each series is scaled to its own total. A model separates well when the green bars sit left of the red ones; the \
         dashed line is the threshold with the best balanced accuracy (the mean of the accuracy on each kind of pair).</p>\
         <div class=\"plots\">{}{}</div>",
        m.pair_faces,
        if m.pair_faces < m.faces {
            format!(" (the first {} of {})", m.pair_faces, m.faces)
        } else {
            String::new()
        },
        if m.pairs_by == "identities" {
            "the person --identities names for each photo"
        } else {
            "photo (no --identities given: a weak stand-in, since faces of one photo are usually different people)"
        },
        svg::histogram(
            &m.before.histogram,
            m.before.best_threshold,
            &format!("before: {}", m.before_model.name),
            "histogram-before"
        ),
        svg::histogram(
            &m.after.histogram,
            m.after.best_threshold,
            &format!("after: {}", m.after_model.name),
            "histogram-after"
        ),
    );
    separation_rows(out, m);
    if m.top == 0 {
        out.push_str("<p class=\"note\">Fewer than two faces are in both snapshots: no neighbours to compare.</p></section>");
        return;
    }
    let _ = write!(
        out,
        "<h3>Top-{} neighbours per face</h3><p class=\"note\">Red: not among the other model's top-{}. Rows with a changed top-1 come first.</p>\
         <table class=\"neighbours\"><tr><th>face</th><th>before</th><th>after</th><th>overlap</th></tr>",
        m.top, m.top
    );
    for n in m.neighbours.iter().take(MAX_NEIGHBOUR_ROWS) {
        thumbnail_css.insert(n.id);
        thumbnail_css.extend(n.before.iter().chain(&n.after).map(|x| x.id));
        neighbour_row(out, n);
    }
    out.push_str("</table>");
    end_section(out, m.neighbours.len(), MAX_NEIGHBOUR_ROWS, "faces");
}

fn neighbour_row(out: &mut String, n: &FaceNeighbours) {
    let _ = write!(
        out,
        "<tr class=\"{}\" data-face-id=\"{}\" data-top1-changed=\"{}\" data-overlap=\"{}\"><td><span class=\"n\"><span class=\"t f{}\"></span><br>#{}</span><br><span class=\"note\">{}</span></td>{}{}<td>{}</td></tr>",
        if n.top1_changed { "changed" } else { "" },
        n.id,
        n.top1_changed,
        n.overlap,
        n.id,
        n.id,
        escape(&n.photo),
        neighbour_cell(&n.before, &n.after),
        neighbour_cell(&n.after, &n.before),
        n.overlap
    );
}

/// The page for `report`, with the thumbnails of the two snapshots it was made from.
pub fn render(report: &Report, before: &Snapshot, after: &Snapshot) -> String {
    let mut faces = Faces {
        before: before.faces.iter().map(|f| (f.record.id, f)).collect(),
        after: after.faces.iter().map(|f| (f.record.id, f)).collect(),
        images: 0,
    };
    let mut body = String::new();
    header(&mut body, report);
    detector_section(&mut body, report, &mut faces);
    let mut thumbnail_css = BTreeSet::new();
    match &report.model {
        Some(m) => model_section(&mut body, m, &mut thumbnail_css),
        None => body.push_str(
            "<section id=\"model\"><h2>Model</h2><p>One of the snapshots holds no facens: nothing to compare.</p></section>",
        ),
    }
    // Neighbour thumbnails are CSS backgrounds, each face's data URI once however often it
    // is listed (the after snapshot's thumbnail, else the before one's).
    let mut css = String::new();
    for id in thumbnail_css {
        let thumbnail = [faces.after.get(&id), faces.before.get(&id)]
            .into_iter()
            .flatten()
            .find_map(|f| f.thumbnail_base64.as_deref());
        if let Some(t) = thumbnail {
            let _ = writeln!(css, ".f{id}{{background-image:url({})}}", data_uri(t));
        }
    }
    let d = &report.detector;
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>refacen migration report</title>\
         <style>{STYLE}</style><style>{css}</style></head>\n<body data-images=\"{}\" data-faces-kept=\"{}\" \
         data-faces-lost=\"{}\" data-faces-gained=\"{}\"><h1>refacen migration report</h1>{body}<script>{SCRIPT}</script></body></html>\n",
        faces.images, d.kept, d.lost, d.gained
    );
    page
}
