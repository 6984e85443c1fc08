//! The derived-files directory: normalized faces and thumbnails, named by face id.
//!
//! Files are written to a temporary name and renamed, so a crash never leaves a half-written
//! file under a real name, and a face's files are overwritten in place when it is
//! regenerated.

use std::path::{Path, PathBuf};

use crate::store::FaceId;

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
        let dir = path.parent().expect("derived files live in subdirectories");
        std::fs::create_dir_all(dir)?;
        let tmp =
            dir.join(format!(".{}.tmp{}", path.file_name().unwrap().to_string_lossy(), std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn read(&self, relative: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(relative))
    }
}
