//! The guest directory: dropping a `.wasm` file there makes it selectable by the name it
//! declares in `info`, with no rebuild or configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{GuestComponent, GuestRuntime, LoadError, World};
use refacen_face::{DetectorInfo, EmbedderInfo};

/// What a guest in the directory declares about itself.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "world", rename_all = "lowercase")]
pub enum GuestInfo {
    Detector(DetectorInfo),
    Embedder(EmbedderInfo),
}

impl GuestInfo {
    pub fn name(&self) -> &str {
        match self {
            GuestInfo::Detector(i) => &i.name,
            GuestInfo::Embedder(i) => &i.name,
        }
    }

    pub fn world(&self) -> World {
        match self {
            GuestInfo::Detector(_) => World::Detector,
            GuestInfo::Embedder(_) => World::Embedder,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GuestEntry {
    pub path: PathBuf,
    pub sha256: String,
    #[serde(flatten)]
    pub info: GuestInfo,
}

pub struct GuestDirectory {
    pub dir: PathBuf,
    pub entries: Vec<GuestEntry>,
    /// Files that look like guests but could not be loaded, with the reason.
    pub broken: Vec<(PathBuf, LoadError)>,
    components: Vec<Arc<GuestComponent>>,
}

/// `<dir of the refacen executable>/guests`, or `<that dir>/../guests` when only that exists
/// (`target/release/refacen` finds the guests `cargo xtask guests` puts in `target/guests`).
pub fn default_guest_dir() -> PathBuf {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let beside = exe_dir.join("guests");
    let above = exe_dir.join("../guests");
    if !beside.is_dir() && above.is_dir() { above } else { beside }
}

impl GuestDirectory {
    /// Loads every `*.wasm` file in `dir` and asks it for its info.
    pub fn scan(runtime: &GuestRuntime, dir: &Path) -> Result<Self, LoadError> {
        let read = std::fs::read_dir(dir)
            .map_err(|source| LoadError::Directory { dir: dir.to_path_buf(), source })?;
        let mut paths: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
            .collect();
        paths.sort();
        let mut found =
            GuestDirectory { dir: dir.to_path_buf(), entries: vec![], broken: vec![], components: vec![] };
        for path in paths {
            match describe(runtime, &path) {
                Ok((component, info)) => {
                    found.entries.push(GuestEntry { path, sha256: component.sha256.clone(), info });
                    found.components.push(component);
                }
                Err(e) => found.broken.push((path, e)),
            }
        }
        Ok(found)
    }

    /// The component declaring `name` for `world`.
    pub fn find(&self, world: World, name: &str) -> Result<Arc<GuestComponent>, LoadError> {
        let mut matches = self
            .entries
            .iter()
            .zip(&self.components)
            .filter(|(e, _)| e.info.world() == world && e.info.name() == name);
        let Some((first, component)) = matches.next() else {
            let known: Vec<&str> =
                self.entries.iter().filter(|e| e.info.world() == world).map(|e| e.info.name()).collect();
            let mut hint = if known.is_empty() {
                format!(" (it holds no {}s)", world.noun())
            } else {
                format!(" (available: {})", known.join(", "))
            };
            for (path, error) in self.broken.iter().take(3) {
                hint.push_str(&format!("; {} failed to load: {error}", path.display()));
            }
            return Err(LoadError::NotFound {
                world: world.noun(),
                name: name.into(),
                dir: self.dir.clone(),
                known: hint,
            });
        };
        if let Some((second, _)) = matches.next() {
            return Err(LoadError::Ambiguous {
                world: world.noun(),
                name: name.into(),
                dir: self.dir.clone(),
                first: first.path.clone(),
                second: second.path.clone(),
            });
        }
        Ok(component.clone())
    }
}

fn describe(runtime: &GuestRuntime, path: &Path) -> Result<(Arc<GuestComponent>, GuestInfo), LoadError> {
    let component = runtime.load(path)?;
    let info = match component.world {
        World::Detector => GuestInfo::Detector(runtime.detector(component.clone())?.info().clone()),
        World::Embedder => GuestInfo::Embedder(runtime.embedder(component.clone())?.info().clone()),
    };
    Ok((component, info))
}

impl GuestRuntime {
    /// A guest selected on the command line: a path (anything with a `/` or ending in
    /// `.wasm`), or the name a guest in `guest_dir` declares.
    pub fn resolve(
        &self,
        spec: &str,
        world: World,
        guest_dir: &Path,
    ) -> Result<Arc<GuestComponent>, LoadError> {
        let component = if spec.contains('/') || spec.ends_with(".wasm") {
            self.load(Path::new(spec))?
        } else {
            GuestDirectory::scan(self, guest_dir)?.find(world, spec)?
        };
        if component.world != world {
            return Err(LoadError::WrongWorld {
                path: component.path.clone(),
                found: component.world.describe(),
                expected: world.describe(),
            });
        }
        Ok(component)
    }
}
