//! `refacen guests`: what the guest directory offers; `guests check`, the conformance check of
//! a guest; `guests new`, a new guest crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::GuestArgs;
use refacen_authoring::{Check, CheckOptions, GuestKind, component_path, new_guest};
use refacen_runtime::{GuestDirectory, GuestInfo};

#[derive(Args, Debug)]
pub struct GuestsArgs {
    #[command(subcommand)]
    pub command: Option<GuestsCommand>,

    #[command(flatten)]
    pub guest: GuestArgs,

    /// Print JSON: one object per guest.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum GuestsCommand {
    /// Check a guest against refacen's contract: world and imports, info, its answers on
    /// sample and odd inputs (twice: determinism), time and memory per call, each parameter at
    /// its default and another value, bad values refused. Exit status 1 on any violation.
    Check(CheckArgs),
    /// Write a new guest crate into DIR that builds with `cargo build --release`.
    New(NewArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The guest: a .wasm file, or the name a detector or model in the guest directory declares.
    #[arg(value_name = "FILE.wasm|NAME")]
    pub guest_spec: String,

    /// Check a detector with this parameter set (repeatable); each one is also tried at its
    /// default.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,

    /// Also run the guest on this photo (a detector) or 150x150 normalized face (a model),
    /// before the built-in samples (repeatable).
    #[arg(long = "sample", value_name = "IMAGE")]
    pub samples: Vec<PathBuf>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub guest: GuestArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    Detector,
    Embedder,
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// What the guest is: a face detector or a face-recognition model (embedder).
    #[arg(long, value_enum)]
    pub kind: Kind,

    /// The crate's name, which is also the name the guest declares (`--detector NAME`).
    pub name: String,

    /// Where to write the crate: a new or empty directory.
    pub dir: PathBuf,
}

pub fn run(args: &GuestsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(GuestsCommand::Check(check)) => run_check(check),
        Some(GuestsCommand::New(new)) => run_new(new),
        None => list(args),
    }
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.guest.runtime()?;
    let options = CheckOptions { params: args.params.clone(), samples: args.samples.clone() };
    let guest_dir = args.guest.guest_dir();
    let report =
        Check { runtime: &runtime, guest_dir: &guest_dir, options: &options }.run(&args.guest_spec)?;
    if args.json {
        crate::outln!("{}", serde_json::to_string(&report)?);
    } else {
        crate::outln!("{}", report.table().trim_end());
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn run_new(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let kind = match args.kind {
        Kind::Detector => GuestKind::Detector,
        Kind::Embedder => GuestKind::Embedder,
    };
    let written = new_guest(kind, &args.name, &args.dir)?;
    crate::outln!("wrote {} files into {}", written.len(), args.dir.display());
    crate::outln!("build it:  cd {} && cargo build --release", args.dir.display());
    crate::outln!("check it:  refacen guests check {}", component_path(&args.dir, &args.name).display());
    Ok(ExitCode::SUCCESS)
}

fn list(args: &GuestsArgs) -> anyhow::Result<ExitCode> {
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
            let (version, description) = match &entry.info {
                GuestInfo::Detector(info) => (&info.version, &info.description),
                GuestInfo::Embedder(info) => (&info.version, &info.description),
            };
            let (noun, name) = (entry.info.world().noun(), entry.info.name());
            crate::outln!("\n{noun} {name} {version} ({file}, sha256 {})", &entry.sha256[..16]);
            crate::outln!("  {description}");
            match &entry.info {
                GuestInfo::Detector(info) => {
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
