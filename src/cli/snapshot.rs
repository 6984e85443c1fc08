//! `refacen snapshot`: the face store as one file, taken before and after a detector or model
//! swap so that `refacen report` can show what the swap changes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use super::stores::{ExistingFaceStoreArgs, StateLayout};
use refacen_report::take_snapshot;

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The snapshot file to write: JSON, every face record (lost ones included, as `refacen
    /// faces --json` prints them) with its thumbnail's bytes in base64.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Where the thumbnails are (as given to `regenerate --files-dir`; default
    /// `<state-dir>/files`).
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,

    /// Take only the first N photos (in the order their first face was recorded, which a
    /// regeneration does not change, so the same N photos before and after), for large stores.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub photos: Option<u64>,

    #[command(flatten)]
    pub face_store: ExistingFaceStoreArgs,
}

pub fn run(args: &SnapshotArgs) -> anyhow::Result<ExitCode> {
    let stores = &args.face_store;
    if stores.uploads.is_none() && stores.state_dir.is_none() && args.files_dir.is_none() {
        bail!(
            "snapshot needs the thumbnails: give --uploads DIR (or --state-dir or --files-dir) besides --mongo"
        );
    }
    let layout = StateLayout::new(
        &stores.uploads.clone().unwrap_or_default(),
        stores.state_dir.as_deref(),
        args.files_dir.as_deref(),
    );
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = tokio.block_on(stores.open())?;
    let max_photos = args.photos.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let (snapshot, missing) = tokio.block_on(take_snapshot(
        store.as_ref(),
        &layout.files_dir,
        stores.uploads.as_deref(),
        max_photos,
    ))?;
    if missing > 0 {
        eprintln!(
            "snapshot: warning: {missing} thumbnails named by face records are missing under {}; those faces have none",
            layout.files_dir.display()
        );
    }
    snapshot.write(&args.out)?;
    let lost = snapshot.faces.iter().filter(|f| f.record.lost).count();
    eprintln!(
        "snapshot: {} faces ({lost} lost) of {} photos{} from {} to {}",
        snapshot.faces.len(),
        snapshot.photos.len(),
        if snapshot.is_partial() { format!(" (of {})", snapshot.photos_in_store) } else { String::new() },
        snapshot.store,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
