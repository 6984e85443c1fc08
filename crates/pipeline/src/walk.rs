//! Walking Uploads: every regular file is a photo candidate (decoding decides) unless its
//! name marks it as well-known junk (`.DS_Store`, `Thumbs.db`, videos, sidecars), in a stable
//! order so that `--every-other N` splits the same Uploads the same way on every host.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use refacen_imaging::sniff;
use refacen_store::PhotoName;

use crate::summary::FailureCause;

/// One entry of Uploads.
#[derive(Debug)]
pub enum Entry {
    Photo {
        /// Relative to Uploads, `/`-separated: the photo's key in the store, and its display.
        name: PhotoName,
        path: PathBuf,
    },
    /// Not a photo by its name: skipped, not failed.
    Junk { name: PhotoName, what: &'static str },
    /// Something that cannot be a photo and should be reported.
    Refused { rel: String, cause: FailureCause, message: String },
}

/// Which photos this run takes: every `every`-th, starting at `offset`.
#[derive(Clone, Copy, Debug)]
pub struct Share {
    pub every: u64,
    pub offset: u64,
}

impl Share {
    pub const ALL: Share = Share { every: 1, offset: 0 };

    pub fn takes(&self, index: u64) -> bool {
        index % self.every == self.offset
    }
}

/// Calls `visit` for each entry of `uploads` in sorted order, leaving out the `skip`
/// directories (refacen's own state). Stops early when `visit` returns false.
pub fn walk(uploads: &Path, skip: &[PathBuf], share: Share, mut visit: impl FnMut(Entry) -> bool) {
    let root = uploads.canonicalize().unwrap_or_else(|_| uploads.to_path_buf());
    let skip: Vec<PathBuf> = skip.iter().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())).collect();
    let mut index = 0u64;
    let walker = walkdir::WalkDir::new(uploads).follow_links(false).sort_by_file_name().into_iter();
    let walker = walker.filter_entry(|e| {
        let canonical = e.path().canonicalize().unwrap_or_else(|_| e.path().to_path_buf());
        !(e.file_type().is_dir() && skip.contains(&canonical))
    });
    let name = |path: &Path| {
        let components: Vec<&[u8]> = path
            .strip_prefix(uploads)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().as_bytes())
            .collect();
        PhotoName::from_bytes(&components.join(&b'/'))
    };
    let relative = |path: &Path| name(path).display;
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let rel = e.path().map(relative).unwrap_or_default();
                let keep_going = visit(Entry::Refused {
                    rel,
                    cause: FailureCause::UnreadableDirectory,
                    message: format!(
                        "cannot read: {}",
                        e.io_error().map_or(e.to_string(), |io| io.to_string())
                    ),
                });
                if !keep_going {
                    return;
                }
                continue;
            }
        };
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        let photo_name = name(entry.path());
        let rel = photo_name.display.clone();
        let junk = sniff::junk_name(entry.file_name());
        let item = if file_type.is_symlink() {
            match entry.path().canonicalize() {
                Ok(target) if target.starts_with(&root) && target.is_file() => match junk {
                    Some(what) => Entry::Junk { name: photo_name, what },
                    None => Entry::Photo { name: photo_name, path: entry.path().to_path_buf() },
                },
                Ok(target) if !target.starts_with(&root) => Entry::Refused {
                    rel,
                    cause: FailureCause::SymlinkOutOfUploads,
                    message: format!("symlink to {} leaves Uploads; refused", target.display()),
                },
                Ok(_) => Entry::Refused {
                    rel,
                    cause: FailureCause::SymlinkedDirectory,
                    message: "symlinked directories are not followed".into(),
                },
                // ELOOP: the link leads back to itself.
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Entry::Refused {
                    rel,
                    cause: FailureCause::SymlinkLoop,
                    message: format!("symlink loop: {e}"),
                },
                Err(e) => Entry::Refused {
                    rel,
                    cause: FailureCause::BrokenSymlink,
                    message: format!("broken symlink: {e}"),
                },
            }
        } else if file_type.is_file() {
            match junk {
                Some(what) => Entry::Junk { name: photo_name, what },
                None => Entry::Photo { name: photo_name, path: entry.path().to_path_buf() },
            }
        } else {
            Entry::Refused { rel, cause: FailureCause::NotARegularFile, message: "not a regular file".into() }
        };
        if matches!(item, Entry::Photo { .. } | Entry::Junk { .. }) {
            let taken = share.takes(index);
            index += 1;
            if !taken {
                continue;
            }
        }
        if !visit(item) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path, skip: &[PathBuf], share: Share) -> Vec<String> {
        let mut out = Vec::new();
        walk(dir, skip, share, |e| {
            if let Entry::Photo { name, .. } = e {
                out.push(name.key);
            }
            true
        });
        out
    }

    #[test]
    fn walks_sorted_skips_state_and_splits_into_shares() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.jpg", "a.jpg", "sub/c.jpg", "sub/d.jpg", "state/x.redb"] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let skip = [dir.path().join("state")];
        assert_eq!(names(dir.path(), &skip, Share::ALL), ["a.jpg", "b.jpg", "sub/c.jpg", "sub/d.jpg"]);
        assert_eq!(names(dir.path(), &skip, Share { every: 2, offset: 0 }), ["a.jpg", "sub/c.jpg"]);
        assert_eq!(names(dir.path(), &skip, Share { every: 2, offset: 1 }), ["b.jpg", "sub/d.jpg"]);
    }

    #[test]
    fn junk_is_known_by_name_and_names_that_are_not_utf8_keep_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        for name in [&b"col\xff.jpg"[..], b"col\xfe.jpg", b".DS_Store", b"IMG_0001.MOV"] {
            std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(name)), b"x").unwrap();
        }
        let mut photos = Vec::new();
        let mut junk = Vec::new();
        walk(dir.path(), &[], Share::ALL, |e| {
            match e {
                Entry::Photo { name, .. } => photos.push(name),
                Entry::Junk { name, .. } => junk.push(name.key),
                Entry::Refused { rel, .. } => panic!("{rel} refused"),
            }
            true
        });
        assert_eq!(junk, [".DS_Store", "IMG_0001.MOV"]);
        let keys: Vec<&str> = photos.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["col\\xfe.jpg//636f6cfe2e6a7067", "col\\xff.jpg//636f6cff2e6a7067"]);
        assert_eq!(PhotoName::bytes_of_key(keys[1]), b"col\xff.jpg");
    }
}
