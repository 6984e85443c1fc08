//! `refacen spaces`: the facen spaces of the search store, one per model, and which one
//! search answers from.

use std::process::ExitCode;

use clap::Args;

use super::stores::{SearchStoreArgs, StoreRetryArgs};

#[derive(Args, Debug)]
pub struct SpacesArgs {
    /// Print JSON: one object per space.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub search_store: SearchStoreArgs,

    #[command(flatten)]
    pub retry: StoreRetryArgs,
}

pub fn run(args: &SpacesArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio.block_on(async {
        let search = args.search_store.open_required("spaces", &args.retry).await?;
        let spaces = search.spaces().await?;
        for space in &spaces {
            if args.json {
                crate::outln!(
                    "{}",
                    serde_json::json!({
                        "name": space.name,
                        "model": space.model_name,
                        "facen_size": space.facen_size,
                        "count": space.count,
                        "counts_per_shard": space.counts_per_shard,
                        "active": space.active,
                    })
                );
            } else {
                crate::outln!(
                    "{}{} model {} ({} values): {} facens (per shard: {:?})",
                    space.name,
                    if space.active { " (active)" } else { "" },
                    space.model_name,
                    space.facen_size,
                    space.count,
                    space.counts_per_shard
                );
            }
        }
        eprintln!("spaces: {} in {}", spaces.len(), search.location());
        Ok(ExitCode::SUCCESS)
    })
}
