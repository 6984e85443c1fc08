//! `refacen guests`: what the guest directory offers.

use std::process::ExitCode;

use clap::Args;

use super::GuestArgs;
use refacen_runtime::{GuestDirectory, GuestInfo};

#[derive(Args, Debug)]
pub struct GuestsArgs {
    #[command(flatten)]
    pub guest: GuestArgs,

    /// Print JSON: one object per guest.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &GuestsArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.guest.runtime()?;
    let dir = args.guest.guest_dir();
    let found = GuestDirectory::scan(&runtime, &dir)?;
    if args.json {
        for entry in &found.entries {
            crate::outln!("{}", serde_json::to_string(entry)?);
        }
        for (path, error) in &found.broken {
            crate::outln!("{}", serde_json::json!({ "path": path, "error": error.to_string() }));
        }
    } else {
        crate::outln!("guest directory: {}", dir.display());
        if found.entries.is_empty() && found.broken.is_empty() {
            crate::outln!("  (no *.wasm files)");
        }
        for entry in &found.entries {
            let file = entry.path.file_name().unwrap_or_default().to_string_lossy();
            match &entry.info {
                GuestInfo::Detector(info) => {
                    crate::outln!(
                        "\ndetector {} {} ({file}, sha256 {})",
                        info.name,
                        info.version,
                        &entry.sha256[..16]
                    );
                    crate::outln!("  {}", info.description);
                    for p in &info.params {
                        crate::outln!(
                            "  --param {}=<{:?}> (default {}): {}",
                            p.name,
                            p.kind,
                            p.default,
                            p.help
                        );
                    }
                }
                GuestInfo::Embedder(info) => {
                    crate::outln!(
                        "\nmodel {} {} ({file}, sha256 {})",
                        info.name,
                        info.version,
                        &entry.sha256[..16]
                    );
                    crate::outln!("  {}", info.description);
                    crate::outln!(
                        "  facen size {}, input {}x{}",
                        info.facen_size,
                        info.template.width,
                        info.template.height
                    );
                }
            }
        }
        for (path, error) in &found.broken {
            crate::outln!("\nbroken {}: {error}", path.display());
        }
    }
    Ok(if found.broken.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
