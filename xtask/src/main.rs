//! Developer tasks for refacen, run as `cargo xtask <command>`.

mod convert;
mod guests;
mod other_languages;
mod weights;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about = "Developer tasks for refacen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch the pinned weights listed in guests/weights.toml (sha256-checked) and run its
    /// conversions (e.g. dlib's ResNet to ONNX).
    Weights(weights::Args),
    /// Fetch weights, build the guest components (Rust, Python and JavaScript) and copy them
    /// to target/guests.
    Guests(guests::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Weights(args) => weights::run(&args),
        Command::Guests(args) => guests::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (the parent of this crate's directory).
fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in a subdirectory of the repository")
}

/// `path` relative to the repository root where possible, for messages.
fn display_path(path: &Path) -> PathBuf {
    path.strip_prefix(repo_root()).map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}
