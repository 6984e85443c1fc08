//! `refacen faces`: the face records of a store, for operators and scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::regenerate::StateLayout;
use crate::store::{FaceId, FaceStore};

#[derive(Args, Debug)]
pub struct FacesArgs {
    /// The Uploads directory whose face store to read (its state is `<uploads>.refacen`).
    #[arg(long, value_name = "DIR", required_unless_present = "state_dir")]
    pub uploads: Option<PathBuf>,

    /// The state directory of the face store (as given to `regenerate --state-dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Print JSON: one record per line, facens included.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &FacesArgs) -> anyhow::Result<ExitCode> {
    let uploads = args.uploads.clone().unwrap_or_default();
    let layout = StateLayout::new(&uploads, args.state_dir.as_deref(), None);
    let store = layout.open_existing_store()?;
    let tokio = tokio::runtime::Builder::new_current_thread().build()?;
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
                    face.photo,
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
