//! `refacen embed`: facens of faces that are already normalized.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::GuestArgs;
use refacen_imaging::{DecodeLimits, align, decode_rgb};
use refacen_pipeline::embed_all;
use refacen_runtime::World;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model (embedder): a name from the guest directory or a path to a .wasm file.
    #[arg(long, value_name = "NAME|PATH", default_value = "dlib-resnet-128")]
    pub model: String,

    /// Normalized faces: 150x150 face chips in refacen's canonical geometry, as `regenerate`
    /// writes them (dlib's `get_face_chip(img, shape, 150, 0.25)` chips are the same geometry).
    #[arg(long = "aligned", value_name = "IMAGE", required = true, num_args = 1..)]
    pub aligned: Vec<PathBuf>,

    /// Print JSON: one object per face and line, `{"image", "facen": [...]}`.
    #[arg(long)]
    pub json: bool,

    /// Faces per call into the model.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,

    #[command(flatten)]
    pub guest: GuestArgs,
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.guest.runtime()?;
    let component = runtime.resolve(&args.model, World::Embedder, &args.guest.guest_dir())?;
    let mut embedder = runtime.embedder(component)?;
    let template = embedder.info().template.clone();
    let canonical = &align::CANONICAL;
    let mut failed = 0;
    let mut fail = |path: &Path, message: String| -> anyhow::Result<()> {
        failed += 1;
        eprintln!("error: {message}");
        if args.json {
            crate::outln!("{}", serde_json::json!({ "image": path, "error": message }));
        }
        Ok(())
    };
    for chunk in args.aligned.chunks(usize::from(args.batch_size)) {
        // Decode and check every file of the chunk; embed the good ones together (a face
        // the model fails on is retried alone, so it fails only itself).
        let mut chips = Vec::new();
        for path in chunk {
            match decode_rgb(path, &DecodeLimits::default()) {
                Ok(chip) if (chip.width(), chip.height()) == (canonical.width, canonical.height) => {
                    chips.push((path, chip))
                }
                Ok(chip) => fail(
                    path,
                    format!(
                        "{}: {}x{} is not a normalized face ({}x{})",
                        path.display(),
                        chip.width(),
                        chip.height(),
                        canonical.width,
                        canonical.height
                    ),
                )?,
                Err(e) => fail(path, e.to_string())?,
            }
        }
        let images: Vec<&image::RgbImage> = chips.iter().map(|(_, chip)| chip).collect();
        let results = embed_all(&mut embedder, &template, &images, images.len());
        for ((path, _), result) in chips.iter().zip(results) {
            match result {
                Ok(facen) => print_facen(path, &facen, args.json)?,
                Err((_, message)) => fail(path, format!("{}: {message}", path.display()))?,
            }
        }
    }
    eprintln!("embed: {} face(s), {} failed", args.aligned.len(), failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_facen(path: &std::path::Path, facen: &[f32], json: bool) -> anyhow::Result<()> {
    if json {
        crate::outln!("{}", serde_json::json!({ "image": path, "facen": facen }));
    } else {
        let norm = facen.iter().map(|v| v * v).sum::<f32>().sqrt();
        let head: Vec<String> = facen.iter().take(4).map(|v| format!("{v:.4}")).collect();
        crate::outln!(
            "{}: facen[{}] = [{}, ...] (norm {norm:.4})",
            path.display(),
            facen.len(),
            head.join(", ")
        );
    }
    Ok(())
}
