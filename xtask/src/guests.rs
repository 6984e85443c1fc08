//! `cargo xtask guests`: build the guest components and copy them where the host finds
//! them: target/guests/<package>.wasm, and target/test-guests/<package>.wasm for the
//! test guests (packages under guests/testing/). The Python and JavaScript guests
//! (guests/python, guests/js) are built into target/guests/ too ([`other_languages`]).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;

use crate::{display_path, other_languages, weights};

const TARGET: &str = "wasm32-wasip2";

#[derive(clap::Args)]
pub struct Args {
    /// Cargo profile to build the guests with.
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    profile: Profile,
    /// Take weight archives from DIR instead of downloading them (see `weights --from`).
    #[arg(long, value_name = "DIR")]
    weights_from: Option<PathBuf>,
    /// Build this guest workspace instead of guests/Cargo.toml.
    #[arg(long, value_name = "PATH", hide = true, env = "XTASK_GUESTS_MANIFEST")]
    manifest_path: Option<PathBuf>,
    /// Build only the Rust guests, without the Python and JavaScript ones (guests/python,
    /// guests/js) and their toolchains (no Node.js needed), and remove those from
    /// target/guests: what the container image ships.
    #[arg(long)]
    rust_only: bool,
    /// Copy the components under DIR instead of target/.
    #[arg(long, value_name = "DIR", hide = true)]
    out_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Profile {
    Release,
    Debug,
}

impl Profile {
    /// The name cargo knows the profile by.
    fn cargo_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "dev",
        }
    }

    /// The directory cargo puts the profile's artifacts in.
    fn dir_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// The part of `cargo metadata` output we need.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetadataPackage>,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct MetadataPackage {
    name: String,
    manifest_path: PathBuf,
    targets: Vec<MetadataTarget>,
}

#[derive(Deserialize)]
struct MetadataTarget {
    name: String,
    kind: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::repo_root();
    weights::run(&weights::Args { from: args.weights_from.clone(), package: None, manifest: None })?;

    let manifest = match &args.manifest_path {
        Some(path) => path.clone(),
        None => root.join("guests/Cargo.toml"),
    };
    ensure!(manifest.is_file(), "guest workspace manifest {} not found", display_path(&manifest).display());
    let workspace_dir = manifest.parent().context("manifest path has no parent")?;
    check_target_installed(workspace_dir)?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = root.join("target/wasm");
    println!("building guests ({}, {TARGET})", args.profile.dir_name());
    let status = Command::new(&cargo)
        .args(["build", "--profile", args.profile.cargo_name(), "--target", TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace_dir)
        .status()
        .context("cannot run cargo")?;
    ensure!(status.success(), "building the guests failed ({status}); see cargo's messages above");

    let metadata = metadata(&cargo, &manifest)?;
    let artifacts = target_dir.join(TARGET).join(args.profile.dir_name());
    let out_dir = match &args.out_dir {
        Some(dir) => dir.clone(),
        None => root.join("target"),
    };
    let mut produced = copy_components(&metadata, &artifacts, &out_dir)?;
    if args.manifest_path.is_none() && !args.rust_only {
        produced.extend(other_languages::build(root, &out_dir.join("guests"))?);
    }
    remove_stale(&out_dir, &produced)
}

/// Fails with the command to run unless the standard library for [`TARGET`] is installed.
fn check_target_installed(workspace_dir: &Path) -> Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .current_dir(workspace_dir)
        .output()
        .context("cannot run rustc")?;
    let libdir = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && Path::new(libdir.trim()).is_dir(),
        "the Rust target {TARGET} is not installed: run `rustup target add {TARGET}`"
    );
    Ok(())
}

fn metadata(cargo: &OsString, manifest: &Path) -> Result<Metadata> {
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(manifest)
        .output()
        .context("cannot run cargo metadata")?;
    ensure!(
        output.status.success(),
        "`cargo metadata` failed for {}:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("cannot parse the output of `cargo metadata`")
}

/// Copies the component of each cdylib package to `out_dir`/guests or
/// `out_dir`/test-guests, and returns their paths.
fn copy_components(metadata: &Metadata, artifacts: &Path, out_dir: &Path) -> Result<HashSet<PathBuf>> {
    let guests_dir = out_dir.join("guests");
    let test_guests_dir = out_dir.join("test-guests");
    let testing = metadata.workspace_root.join("testing");
    for dir in [&guests_dir, &test_guests_dir] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let mut copied = HashSet::new();
    for package in &metadata.packages {
        let Some(lib) = package.targets.iter().find(|t| t.kind.iter().any(|k| k == "cdylib")) else {
            continue;
        };
        let artifact = artifacts.join(format!("{}.wasm", lib.name.replace('-', "_")));
        let dir = if package.manifest_path.starts_with(&testing) { &test_guests_dir } else { &guests_dir };
        let dest = dir.join(format!("{}.wasm", package.name));
        ensure!(
            artifact.is_file(),
            "{} not found after the build: is {} a cdylib built for {TARGET}?",
            display_path(&artifact).display(),
            package.name
        );
        let size = fs::copy(&artifact, &dest)
            .with_context(|| format!("cannot copy {} to {}", artifact.display(), dest.display()))?;
        println!("  {:<40} {}", display_path(&dest).display(), human_size(size));
        copied.insert(dest);
    }
    Ok(copied)
}

/// Removes the components in `out_dir`/guests and `out_dir`/test-guests that no guest produces.
fn remove_stale(out_dir: &Path, produced: &HashSet<PathBuf>) -> Result<()> {
    for dir in [out_dir.join("guests"), out_dir.join("test-guests")] {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wasm") && !produced.contains(&path) {
                fs::remove_file(&path).with_context(|| format!("cannot remove stale {}", path.display()))?;
                println!("  removed stale {}", display_path(&path).display());
            }
        }
    }
    Ok(())
}

pub(crate) fn human_size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let bytes = bytes as f64;
    if bytes >= KIB * KIB {
        format!("{:.1} MiB", bytes / (KIB * KIB))
    } else {
        format!("{:.1} KiB", bytes / KIB)
    }
}
