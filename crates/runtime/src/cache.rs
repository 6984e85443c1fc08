//! Compiled guest code, cached in memory and on disk by the sha256 of the `.wasm` file.
//!
//! Compiling a detector takes tens of milliseconds to seconds; deserializing its cached code
//! takes well under a millisecond. The file name also carries a hash of the engine's
//! compatibility settings (wasmtime version, fuel on or off, CPU features), so code compiled
//! under other settings is never loaded. Loading cached code executes native code from the
//! cache directory: it must be writable only by the user running refacen (it is created 0700).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wasmtime::Engine;
use wasmtime::component::Component;

pub struct CodeCache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Component>>,
}

impl CodeCache {
    /// A cache that also keeps compiled code in `dir` (`None`: memory only).
    pub fn new(dir: Option<PathBuf>) -> Self {
        CodeCache { dir, memory: Mutex::new(HashMap::new()) }
    }

    /// `$REFACEN_CACHE_DIR`, else `$XDG_CACHE_HOME/refacen`, else `~/.cache/refacen`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("REFACEN_CACHE_DIR") {
            return Some(dir.into());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("refacen"))
    }

    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Component> {
        if let Some(c) = self.memory.lock().expect("code cache poisoned").get(sha256) {
            return Ok(c.clone());
        }
        let file = self.dir.as_ref().map(|dir| dir.join(format!("{sha256}-{}.cwasm", engine_key(engine))));
        let cached = file.as_deref().filter(|f| f.exists()).and_then(|f| {
            // SAFETY: the file was written by `store` below from `Engine::precompile_component`
            // under identical engine settings (they are part of its name), in a directory
            // only this user can write; wasmtime also checks its header and version.
            unsafe { Component::deserialize_file(engine, f) }.ok()
        });
        let component = match cached {
            Some(c) => c,
            None => {
                let code = engine.precompile_component(bytes)?;
                if let Some(file) = &file {
                    // A cache that cannot be written only costs time; never fail the load.
                    let _ = store(file, &code);
                }
                // SAFETY: `code` was produced just now by this engine.
                unsafe { Component::deserialize(engine, &code)? }
            }
        };
        self.memory.lock().expect("code cache poisoned").insert(sha256.to_string(), component.clone());
        Ok(component)
    }
}

fn engine_key(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Writes atomically (temp file + rename) so a killed process never leaves half a file.
fn store(file: &Path, code: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().expect("cache file has a directory");
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, code)?;
    std::fs::rename(&tmp, file)
}
