//! `refacen faces`: the face records of a store, for operators and scripts.

use std::process::ExitCode;

use clap::Args;

use super::stores::ExistingFaceStoreArgs;
use refacen_store::{FacePages, PhotoName};

#[derive(Args, Debug)]
pub struct FacesArgs {
    /// Print JSON: one record per line, facens included.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub face_store: ExistingFaceStoreArgs,
}

pub fn run(args: &FacesArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = tokio.block_on(args.face_store.open())?;
    let mut pages = FacePages::new(store.as_ref(), 1, 1024);
    let mut count = 0;
    while let Some(page) = tokio.block_on(pages.next_page())? {
        for face in page {
            count += 1;
            if args.json {
                crate::outln!("{}", serde_json::to_string(&face)?);
            } else {
                let [x1, y1, x2, y2] = face.bbox;
                let facen = face
                    .facen
                    .as_ref()
                    .map_or("-".to_string(), |f| format!("{}[{}]", f.model.name, f.values.len()));
                crate::outln!(
                    "{:>8} {}{} [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}] {:.3} {} facen {facen}",
                    face.id,
                    PhotoName::display_of_key(&face.photo),
                    if face.lost { " (lost)" } else { "" },
                    face.score,
                    face.detector.name,
                );
            }
        }
    }
    eprintln!("faces: {count} in {}", store.location());
    Ok(ExitCode::SUCCESS)
}
