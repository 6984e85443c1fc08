//! `refacen search`: the stored faces nearest to the faces of a photo (brute force).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::GuestArgs;
use super::regenerate::StateLayout;
use crate::face::parse_params;
use crate::imaging::{DecodeLimits, align, decode_rgb};
use crate::pipeline::model_input;
use crate::runtime::World;
use crate::store::{FaceId, FaceStore};

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The query photo.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// How many nearest faces to return per face of the photo.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub top: u16,

    /// The Uploads directory whose face store to search (its state is `<uploads>.refacen`).
    #[arg(long, value_name = "DIR", required_unless_present = "state_dir")]
    pub uploads: Option<PathBuf>,

    /// The state directory of the face store (as given to `regenerate --state-dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Detector for the query photo.
    #[arg(long, value_name = "NAME|PATH", default_value = "nnd")]
    pub detector: String,

    /// Model: must be the one the stored facens were computed with.
    #[arg(long, value_name = "NAME|PATH", default_value = "dlib-resnet-128")]
    pub model: String,

    /// Set a detector parameter; repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,

    /// Print JSON: one object per query face.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub guest: GuestArgs,
}

/// A stored face and its distance to a query face.
#[derive(serde::Serialize)]
struct Hit {
    id: FaceId,
    photo: String,
    distance: f32,
}

pub fn run(args: &SearchArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.guest.runtime()?;
    let guest_dir = args.guest.guest_dir();
    let mut detector = runtime.detector(runtime.resolve(&args.detector, World::Detector, &guest_dir)?)?;
    let model_component = runtime.resolve(&args.model, World::Embedder, &guest_dir)?;
    let mut embedder = runtime.embedder(model_component.clone())?;
    let params = parse_params(&detector.info().params, &args.params, &detector.info().name.clone())
        .map_err(anyhow::Error::msg)?;

    let photo = decode_rgb(&args.image, &DecodeLimits::default())?;
    let faces = detector.detect(&photo, &params)?;
    if faces.is_empty() {
        eprintln!("search: no face in {}", args.image.display());
        return Ok(ExitCode::FAILURE);
    }
    let template = embedder.info().template.clone();
    // As `regenerate` does: to the canonical chip, then to the model's template.
    let inputs = faces
        .iter()
        .map(|f| {
            let chip = align::warp(&photo, &f.landmarks, &align::CANONICAL).map_err(|e| e.to_string())?;
            model_input(&chip, &template)
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)
        .context("normalizing the query faces")?;
    let queries = embedder.embed(&inputs)?;

    let uploads = args.uploads.clone().unwrap_or_default();
    let layout = StateLayout::new(&uploads, args.state_dir.as_deref(), None);
    let store = layout.open_existing_store()?;
    let tokio = tokio::runtime::Builder::new_current_thread().build()?;
    let mut hits: Vec<Vec<Hit>> = queries.iter().map(|_| Vec::new()).collect();
    let (mut compared, mut other_models) = (0u64, 0u64);
    let mut next = 1;
    loop {
        let page = tokio.block_on(store.scan_faces(next..=FaceId::MAX, 1024))?;
        let Some(last) = page.last().map(|f| f.id) else { break };
        for face in page.into_iter().filter(|f| !f.lost) {
            let Some(facen) = &face.facen else { continue };
            if facen.model.sha256 != model_component.sha256 {
                other_models += 1;
                continue;
            }
            compared += 1;
            for (query, hits) in queries.iter().zip(&mut hits) {
                let distance =
                    query.iter().zip(&facen.values).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
                hits.push(Hit { id: face.id, photo: face.photo.clone(), distance });
            }
        }
        // Keep memory bounded: only the best `top` per query survive each page.
        for h in &mut hits {
            h.sort_by(|a, b| a.distance.total_cmp(&b.distance));
            h.truncate(usize::from(args.top));
        }
        if last == FaceId::MAX {
            break;
        }
        next = last + 1;
    }
    if compared == 0 {
        bail!(
            "the store holds no facens of model `{}` ({}{}); run `refacen regenerate --regenerate facens --model {}`",
            embedder.info().name,
            &model_component.sha256[..12],
            if other_models > 0 {
                format!(", {other_models} faces have facens of other models")
            } else {
                String::new()
            },
            args.model
        );
    }
    for (i, (face, hits)) in faces.iter().zip(&hits).enumerate() {
        if args.json {
            println!("{}", serde_json::json!({ "face": i, "bbox": face.bbox, "nearest": hits }));
        } else {
            let [x1, y1, x2, y2] = face.bbox;
            println!("face {i} [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]:");
            for hit in hits {
                println!("  {:>8.4}  face {:<8} {}", hit.distance, hit.id, hit.photo);
            }
        }
    }
    eprintln!("search: {} face(s) in the photo, {compared} stored faces compared", faces.len());
    Ok(ExitCode::SUCCESS)
}
