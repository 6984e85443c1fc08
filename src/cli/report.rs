//! `refacen report`: what a detector or model swap changes, from two snapshots, as one
//! self-contained HTML page and the same figures as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use refacen_face::Metric;
use refacen_report::{Identities, ReportOptions, Snapshot, compare, html};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The snapshot taken before the change (`refacen snapshot --out FILE`).
    #[arg(long, value_name = "SNAPSHOT")]
    pub before: PathBuf,

    /// The snapshot taken after it.
    #[arg(long, value_name = "SNAPSHOT")]
    pub after: PathBuf,

    /// Directory to write report.html and report.json to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Who is in each photo: a JSON object of photo path (relative to Uploads, or a file name)
    /// to person; "unknown" and "multiple" are left out. Without it, faces of one photo count
    /// as the "same" pairs of the distance histograms.
    #[arg(long, value_name = "FILE")]
    pub identities: Option<PathBuf>,

    /// Nearest neighbours compared per face.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top: u16,

    /// Distance between facens of one model: `l2` (Euclidean) or `cosine` (1 - cosine similarity).
    #[arg(long, value_name = "l2|cosine", default_value_t = Metric::L2)]
    pub metric: Metric,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let identities = args.identities.as_deref().map(Identities::read).transpose()?;
    let before = Snapshot::read(&args.before)?;
    let after = Snapshot::read(&args.after)?;
    let options = ReportOptions { top: usize::from(args.top), metric: args.metric, identities };
    let report = compare((&args.before, &before), (&args.after, &after), &options)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join("report.json");
    let html_path = args.out.join("report.html");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&html_path, html::render(&report, &before, &after))
        .with_context(|| format!("writing {}", html_path.display()))?;
    let d = &report.detector;
    crate::outln!(
        "report: {} photos, {} with changes; faces kept {}, lost {}, gained {}",
        d.photos,
        d.photos_changed,
        d.kept,
        d.lost,
        d.gained
    );
    if let Some(m) = &report.model {
        let accuracy = |a: Option<f64>| a.map_or("-".into(), |a| format!("{a:.3}"));
        crate::outln!(
            "report: model {} -> {}: {} faces, top-1 changed for {}, mean top-{} overlap {}; best balanced accuracy {} -> {}",
            m.before_model.name,
            m.after_model.name,
            m.faces,
            m.top1_changed,
            m.top,
            m.mean_topk_overlap.map_or("-".into(), |o| format!("{o:.3}")),
            accuracy(m.before.best_balanced_accuracy),
            accuracy(m.after.best_balanced_accuracy)
        );
    }
    crate::outln!("report: wrote {} and {}", html_path.display(), json_path.display());
    Ok(ExitCode::SUCCESS)
}
