//! `refacen faces`: the face records of a store, for operators and scripts.

use std::process::ExitCode;

use clap::Args;

use super::stores::ExistingFaceStoreArgs;
use crate::store::{FaceId, PhotoName};

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
    let mut next: FaceId = 1;
    let mut count = 0;
    loop {
        let page = tokio.block_on(store.scan_faces(next..=FaceId::MAX, 1024))?;
        let Some(last) = page.last().map(|f| f.id) else { break };
        for face in page {
            count += 1;
            if args.json {
                println!("{}", serde_json::to_string(&face)?);
            } else {
                let [x1, y1, x2, y2] = face.bbox;
                let facen = face
                    .facen
                    .as_ref()
                    .map_or("-".to_string(), |f| format!("{}[{}]", f.model.name, f.values.len()));
                println!(
                    "{:>8} {}{} [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}] {:.3} {} facen {facen}",
                    face.id,
                    PhotoName::display_of_key(&face.photo),
                    if face.lost { " (lost)" } else { "" },
                    face.score,
                    face.detector.name,
                );
            }
        }
        if last == FaceId::MAX {
            break;
        }
        next = last + 1;
    }
    eprintln!("faces: {count} in {}", store.location());
    Ok(ExitCode::SUCCESS)
}
