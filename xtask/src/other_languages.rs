//! Guests written in Python and JavaScript, built from their sources by `cargo xtask guests`
//! into target/guests/<directory name>.wasm beside the Rust guests.
//!
//! - `guests/python/<name>/`: `app.py` (the `WitWorld` class) and `guest.toml`, built with
//!   componentize-py, pinned with hashes in guests/python/requirements.txt and installed into
//!   the venv target/toolchains/componentize-py.
//! - `guests/js/<name>/`: `guest.js` (the world's exports) and `guest.toml`, built with
//!   componentize-js, pinned by guests/js/package-lock.json and installed with `npm ci` into
//!   target/toolchains/js.
//!
//! `guest.toml` names the world and the files the guest embeds (its network). Both toolchains
//! run the guest's top-level code at build time and snapshot its memory, which is how those
//! files end up inside the component: a Python guest reads them from its module search path,
//! a JavaScript guest gets them from a `weights.js` module generated here.
//!
//! A guest is rebuilt only when an input changed: its sources, the WIT, the embedded files or
//! the toolchain's pin (their digest is kept in target/other-guests/<name>/inputs.sha256), so
//! a second `cargo xtask guests` costs seconds.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::display_path;
use crate::guests::human_size;

/// Changes whenever this file changes what a build produces from the same inputs.
const BUILD_RECIPE: &str = "other-languages 2";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Language {
    Python,
    JavaScript,
}

/// Where a language's guests, their sources and its toolchain are.
struct LanguageLayout {
    /// The directory under guests/ holding this language's guests and its toolchain pin.
    dir: &'static str,
    /// The guest's entry point in its directory.
    entry: &'static str,
    /// The files that pin the toolchain, relative to guests/<dir>; the last one is the file
    /// an installed toolchain is checked against.
    pins: &'static [&'static str],
    /// The toolchain's name, for messages.
    toolchain: &'static str,
    /// The toolchain's directory under target/toolchains/.
    toolchain_dir: &'static str,
    /// The command it runs, relative to its directory.
    tool: &'static str,
}

impl Language {
    const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    fn layout(self) -> &'static LanguageLayout {
        match self {
            Language::Python => &LanguageLayout {
                dir: "python",
                entry: "app.py",
                pins: &["requirements.txt"],
                toolchain: "componentize-py",
                toolchain_dir: "componentize-py",
                tool: "bin/componentize-py",
            },
            Language::JavaScript => &LanguageLayout {
                dir: "js",
                entry: "guest.js",
                pins: &["package.json", "package-lock.json"],
                toolchain: "componentize-js",
                toolchain_dir: "js",
                tool: "node_modules/@bytecodealliance/componentize-js/src/cli.js",
            },
        }
    }
}

/// `guest.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// `detector` or `embedder`.
    world: String,
    /// Files the guest embeds, relative to the repository root.
    #[serde(default)]
    embed: Vec<PathBuf>,
}

struct Guest {
    name: String,
    language: Language,
    source_dir: PathBuf,
    manifest: Manifest,
}

/// Builds every Python and JavaScript guest that is not up to date into `guests_dir`, and
/// returns the paths of all of their components.
pub fn build(root: &Path, guests_dir: &Path) -> Result<Vec<PathBuf>> {
    let guests = find(root)?;
    let mut outputs = Vec::new();
    let mut toolchains = Toolchains { root, installed: BTreeMap::new() };
    for guest in &guests {
        let output = guests_dir.join(format!("{}.wasm", guest.name));
        let work_dir = root.join("target/other-guests").join(&guest.name);
        let stamp = work_dir.join("inputs.sha256");
        let digest = inputs_digest(root, guest)?;
        let up_to_date =
            output.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(digest.as_str());
        if up_to_date {
            println!("  {:<40} up to date", display_path(&output).display());
        } else {
            let started = std::time::Instant::now();
            if work_dir.exists() {
                fs::remove_dir_all(&work_dir)
                    .with_context(|| format!("cannot clear {}", work_dir.display()))?;
            }
            fs::create_dir_all(&work_dir).with_context(|| format!("cannot create {}", work_dir.display()))?;
            let partial = work_dir.join(format!("{}.wasm", guest.name));
            match guest.language {
                Language::Python => build_python(root, guest, toolchains.get(guest.language)?, &partial)?,
                Language::JavaScript => {
                    build_js(root, guest, toolchains.get(guest.language)?, &work_dir, &partial)?
                }
            }
            fs::rename(&partial, &output)
                .with_context(|| format!("cannot move {} to {}", partial.display(), output.display()))?;
            fs::write(&stamp, &digest).with_context(|| format!("cannot write {}", stamp.display()))?;
            let size = fs::metadata(&output)?.len();
            println!(
                "  {:<40} {} ({}, built in {:.0} s)",
                display_path(&output).display(),
                human_size(size),
                guest.language.layout().dir,
                started.elapsed().as_secs_f64()
            );
        }
        outputs.push(output);
    }
    Ok(outputs)
}

/// Every guests/python/*/ and guests/js/*/ directory with a `guest.toml`, by name.
fn find(root: &Path) -> Result<Vec<Guest>> {
    let mut guests = Vec::new();
    for language in Language::ALL {
        let dir = root.join("guests").join(language.layout().dir);
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("guest.toml").is_file())
            .collect();
        dirs.sort();
        for source_dir in dirs {
            let manifest_path = source_dir.join("guest.toml");
            let text = fs::read_to_string(&manifest_path)
                .with_context(|| format!("cannot read {}", manifest_path.display()))?;
            let manifest: Manifest = toml::from_str(&text)
                .with_context(|| format!("{} is not valid", display_path(&manifest_path).display()))?;
            ensure!(
                matches!(manifest.world.as_str(), "detector" | "embedder"),
                "{}: world `{}` is neither `detector` nor `embedder`",
                display_path(&manifest_path).display(),
                manifest.world
            );
            let entry = source_dir.join(language.layout().entry);
            ensure!(entry.is_file(), "{} is missing", display_path(&entry).display());
            let name =
                source_dir.file_name().context("guest directory has no name")?.to_string_lossy().into_owned();
            guests.push(Guest { name, language, source_dir, manifest });
        }
    }
    Ok(guests)
}

/// The sha256 of everything a guest's component is built from.
fn inputs_digest(root: &Path, guest: &Guest) -> Result<String> {
    let mut files: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut add_dir = |dir: &Path| -> Result<()> {
        for path in files_under(dir)? {
            files.insert(path.strip_prefix(root).unwrap_or(&path).to_path_buf(), path);
        }
        Ok(())
    };
    add_dir(&guest.source_dir)?;
    add_dir(&root.join("wit"))?;
    let layout = guest.language.layout();
    for pin in layout.pins {
        let path = root.join("guests").join(layout.dir).join(pin);
        files.insert(path.strip_prefix(root).unwrap_or(&path).to_path_buf(), path);
    }
    for embedded in &guest.manifest.embed {
        let path = root.join(embedded);
        ensure!(
            path.is_file(),
            "{} (embedded by guest {}) is missing: run `cargo xtask weights`",
            display_path(&path).display(),
            guest.name
        );
        files.insert(embedded.clone(), path);
    }
    let mut hasher = Sha256::new();
    hasher.update(BUILD_RECIPE.as_bytes());
    for (name, path) in &files {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        hasher.update(name.to_string_lossy().as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The files under `dir`, recursively, skipping Python's caches.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "__pycache__") {
                found.extend(files_under(&path)?);
            }
        } else {
            found.push(path);
        }
    }
    Ok(found)
}

/// The toolchains, installed on first use.
struct Toolchains<'a> {
    root: &'a Path,
    /// The command of each toolchain checked or installed so far.
    installed: BTreeMap<Language, PathBuf>,
}

impl Toolchains<'_> {
    /// `language`'s toolchain command, installed into target/toolchains/ unless it is there,
    /// installed from its pin as the pin is now (a copy of the pin, `installed-<pin>`, beside
    /// it says what it was installed from).
    fn get(&mut self, language: Language) -> Result<&Path> {
        if !self.installed.contains_key(&language) {
            let layout = language.layout();
            let dir = self.root.join("target/toolchains").join(layout.toolchain_dir);
            let pins = self.root.join("guests").join(layout.dir);
            let pin_name = layout.pins.last().expect("every language pins its toolchain");
            let pin = pins.join(pin_name);
            let installed = dir.join(format!("installed-{pin_name}"));
            let tool = dir.join(layout.tool);
            if !(tool.is_file() && same_contents(&pin, &installed)?) {
                println!(
                    "installing {} ({}) into {}",
                    layout.toolchain,
                    display_path(&pin).display(),
                    display_path(&dir).display()
                );
                if dir.exists() {
                    fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
                }
                match language {
                    Language::Python => install_componentize_py(&dir, &pin)?,
                    Language::JavaScript => install_componentize_js(&dir, &pins)?,
                }
                fs::copy(&pin, &installed)
                    .with_context(|| format!("cannot write {}", installed.display()))?;
            }
            self.installed.insert(language, tool);
        }
        Ok(&self.installed[&language])
    }
}

/// componentize-py into the venv `venv`, from the hashes of `requirements`.
fn install_componentize_py(venv: &Path, requirements: &Path) -> Result<()> {
    run(Command::new("python3").args(["-m", "venv"]).arg(venv), "python3 -m venv (install python3-venv)")?;
    run(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--require-hashes",
                "--no-deps",
                "-r",
            ])
            .arg(requirements),
        "pip install componentize-py",
    )
}

/// componentize-js into `dir`, by `npm ci` from the package files in `pins` (guests/js).
fn install_componentize_js(dir: &Path, pins: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for file in Language::JavaScript.layout().pins {
        fs::copy(pins.join(file), dir.join(file))
            .with_context(|| format!("cannot copy guests/js/{file} to {}", dir.display()))?;
    }
    run(
        Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(dir),
        "npm ci (install nodejs and npm)",
    )
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let a = fs::read(a).with_context(|| format!("cannot read {}", a.display()))?;
    Ok(fs::read(b).is_ok_and(|b| b == a))
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); see its messages above");
    }
    Ok(())
}

/// `componentize-py -d wit -w WORLD componentize -p SOURCE -p EMBEDDED_DIRS... app -o OUT`.
fn build_python(root: &Path, guest: &Guest, tool: &Path, output: &Path) -> Result<()> {
    let mut command = Command::new(tool);
    command.arg("-d").arg(root.join("wit")).args(["-w", &guest.manifest.world, "componentize", "-p"]);
    command.arg(&guest.source_dir);
    let mut dirs: Vec<PathBuf> = guest
        .manifest
        .embed
        .iter()
        .map(|f| root.join(f).parent().expect("a file has a directory").to_path_buf())
        .collect();
    dirs.dedup();
    for dir in dirs {
        command.arg("-p").arg(dir);
    }
    command.arg("app").arg("-o").arg(output).current_dir(root);
    run(&mut command, &format!("componentize-py for guest {}", guest.name))
}

/// Copies the guest's sources and a generated `weights.js` to `work_dir`, then
/// `componentize-js guest.js --wit wit -n WORLD --disable random clocks http fetch-event -o OUT`.
///
/// Only `stdio` of componentize-js's WASI features stays: without it an exception in the
/// guest traps with no message. The host links stdio to its capped log (docs/security.md).
fn build_js(root: &Path, guest: &Guest, cli: &Path, work_dir: &Path, output: &Path) -> Result<()> {
    for path in files_under(&guest.source_dir)? {
        let relative = path.strip_prefix(&guest.source_dir).expect("listed under the source dir");
        let dest = work_dir.join(relative);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&path, &dest).with_context(|| format!("cannot copy {}", path.display()))?;
    }
    write_weights_module(root, guest, &work_dir.join("weights.js"))?;
    let mut command = Command::new("node");
    command
        .arg(cli)
        .arg(work_dir.join("guest.js"))
        .arg("--wit")
        .arg(root.join("wit"))
        .args(["-n", &guest.manifest.world, "--disable", "random", "clocks", "http", "fetch-event", "-o"])
        .arg(output)
        .current_dir(work_dir);
    run(&mut command, &format!("componentize-js for guest {}", guest.name))
}

/// `weights.js`: `weight(name)` returns the bytes of the embedded file `name` (its file name).
///
/// Each file is one string literal holding two bytes per UTF-16 code unit (little-endian).
/// SpiderMonkey keeps a module's source text and its string constants for the module's life,
/// so they end up in the snapshot beside the decoded bytes: with this packing the dlib graph
/// (21.5 MiB) makes a 119 MiB component, with base64 it made 161 MiB.
fn write_weights_module(root: &Path, guest: &Guest, dest: &Path) -> Result<()> {
    let mut module = String::from(
        "// Generated by `cargo xtask guests` from the files guest.toml embeds. Do not edit.\n\
         const PACKED = {\n",
    );
    for embedded in &guest.manifest.embed {
        let bytes =
            fs::read(root.join(embedded)).with_context(|| format!("cannot read {}", embedded.display()))?;
        let name = embedded.file_name().context("embedded path has no file name")?.to_string_lossy();
        module.push_str(&format!("  {}: [\"", serde_json::to_string(&name)?));
        push_packed(&mut module, &bytes);
        module.push_str(&format!("\", {}],\n", bytes.len()));
    }
    module.push_str(WEIGHTS_DECODER);
    fs::write(dest, module).with_context(|| format!("cannot write {}", dest.display()))
}

/// Appends `bytes` as the contents of a JavaScript string literal, two bytes per UTF-16 code
/// unit, the odd last byte padded with 0.
fn push_packed(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for pair in bytes.chunks(2) {
        let unit = u16::from(pair[0]) | (u16::from(pair.get(1).copied().unwrap_or(0)) << 8);
        match char::from_u32(u32::from(unit)) {
            Some(c) if !(c.is_control() || matches!(c, '"' | '\\' | '\u{2028}' | '\u{2029}')) => out.push(c),
            // Surrogates (no `char`), controls, the quote, the backslash, line terminators.
            _ => write!(out, "\\u{unit:04x}").expect("writing to a String cannot fail"),
        }
    }
}

/// The rest of `weights.js`: the decoder of [`push_packed`]'s strings.
const WEIGHTS_DECODER: &str = r#"};

export function weight(name) {
  const packed = PACKED[name];
  if (packed === undefined) {
    throw new Error(`weights.js holds no file named ${name}: list it in guest.toml's embed`);
  }
  const [text, length] = packed;
  const bytes = new Uint8Array(2 * text.length);
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    bytes[2 * i] = unit & 255;
    bytes[2 * i + 1] = unit >> 8;
  }
  return bytes.subarray(0, length);
}
"#;
