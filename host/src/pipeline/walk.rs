//! Walking Uploads: every regular file is a photo candidate (decoding decides), in a stable
//! order so that `--every-other N` splits the same Uploads the same way on every host.

use std::path::{Path, PathBuf};

/// One entry of Uploads.
#[derive(Debug)]
pub enum Entry {
    Photo {
        /// Relative to Uploads, `/`-separated: the photo's key in the store.
        rel: String,
        path: PathBuf,
    },
    /// Something that cannot be a photo and should be reported.
    Refused { rel: String, cause: &'static str, message: String },
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
    let relative = |path: &Path| {
        path.strip_prefix(uploads)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    };
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let rel = e.path().map(relative).unwrap_or_default();
                let keep_going = visit(Entry::Refused {
                    rel,
                    cause: "unreadable directory",
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
        let rel = relative(entry.path());
        let item = if file_type.is_symlink() {
            match entry.path().canonicalize() {
                Ok(target) if target.starts_with(&root) && target.is_file() => {
                    Entry::Photo { rel, path: entry.path().to_path_buf() }
                }
                Ok(target) if !target.starts_with(&root) => Entry::Refused {
                    rel,
                    cause: "symlink out of Uploads",
                    message: format!("symlink to {} leaves Uploads; refused", target.display()),
                },
                Ok(_) => Entry::Refused {
                    rel,
                    cause: "symlinked directory",
                    message: "symlinked directories are not followed".into(),
                },
                // ELOOP: the link leads back to itself.
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    Entry::Refused { rel, cause: "symlink loop", message: format!("symlink loop: {e}") }
                }
                Err(e) => {
                    Entry::Refused { rel, cause: "broken symlink", message: format!("broken symlink: {e}") }
                }
            }
        } else if file_type.is_file() {
            Entry::Photo { rel, path: entry.path().to_path_buf() }
        } else {
            Entry::Refused { rel, cause: "not a regular file", message: "not a regular file".into() }
        };
        if matches!(item, Entry::Photo { .. }) {
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
            if let Entry::Photo { rel, .. } = e {
                out.push(rel);
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
}
