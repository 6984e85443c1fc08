//! The derived-files directory: normalized faces and thumbnails, named by face id.
//!
//! Files are written under `.incoming/` and renamed into place, so a crash never leaves a
//! half-written file under a real name, and a face's files are overwritten in place when it
//! is regenerated. What a killed run left in `.incoming/` is removed by a later run once it is
//! an hour old (younger files may belong to a run on another host sharing the directory).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use refacen_store::FaceId;

/// Where files are written before they are renamed into place.
pub const INCOMING: &str = ".incoming";

pub struct DerivedFiles {
    dir: PathBuf,
}

impl DerivedFiles {
    pub fn new(dir: PathBuf) -> Self {
        DerivedFiles { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `normalized/<xx>/<id>.png`, relative to the directory (`xx`: two hex digits spreading
    /// files over 256 subdirectories).
    pub fn normalized(id: FaceId) -> String {
        format!("normalized/{:02x}/{id}.png", id % 256)
    }

    pub fn thumbnail(id: FaceId) -> String {
        format!("thumbs/{:02x}/{id}.jpg", id % 256)
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    pub fn exists(&self, relative: &str) -> bool {
        self.path(relative).is_file()
    }

    pub fn write(&self, relative: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().expect("derived files live in subdirectories"))?;
        let incoming = self.dir.join(INCOMING);
        std::fs::create_dir_all(&incoming)?;
        let name = format!("{}-{}", std::process::id(), relative.replace('/', "_"));
        let tmp = incoming.join(name);
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    /// Removes temporary files killed runs left, once they are an hour old.
    pub fn remove_stale_incoming(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(INCOMING)) else { return };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > Duration::from_secs(3600));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    pub fn read(&self, relative: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(relative))
    }
}
