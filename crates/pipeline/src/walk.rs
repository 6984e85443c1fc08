//! Walking Uploads: every regular file is a photo candidate (decoding decides) unless its
//! name marks it as well-known junk (`.DS_Store`, `Thumbs.db`, videos, sidecars), in a stable
//! order, so that photos are committed (and face ids handed out) in the same order on every run.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::scope::Scope;
use super::shard::Shard;
use refacen_imaging::sniff;
use refacen_store::{FaceId, PhotoName};

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

/// Which part of the photos this run takes.
#[derive(Clone, Copy, Debug)]
pub enum Share {
    /// `--every-other N --every-other-offset K`, the older split: every N-th entry of the
    /// sorted walk, starting at the K-th. A photo added or removed moves every later one to
    /// another share; kept for the command lines that use it.
    EveryOther { every: u64, offset: u64 },
    /// `--shard K/N`: by a fixed hash of the photo's path, whatever else is in Uploads.
    Shard(Shard),
}

impl Share {
    pub const ALL: Share = Share::EveryOther { every: 1, offset: 0 };

    /// Whether the `index`-th candidate of the walk (or of the face scan), known to the
    /// shard hash by `hashed`, is this run's.
    fn takes(&self, index: u64, hashed: impl FnOnce(&Shard) -> bool) -> bool {
        match self {
            Share::EveryOther { every, offset } => index % every == *offset,
            Share::Shard(shard) => hashed(shard),
        }
    }

    pub fn takes_photo(&self, index: u64, path: &[u8]) -> bool {
        self.takes(index, |s| s.takes_photo(path))
    }

    pub fn takes_face(&self, index: u64, id: FaceId) -> bool {
        self.takes(index, |s| s.takes_face(id))
    }
}

/// Calls `visit` for each entry of `uploads` in `scope` and `share`, in sorted order,
/// leaving out the `skip` directories (refacen's own state). Stops early when `visit`
/// returns false. With a `--photos` list only its paths are looked at.
pub fn walk(
    uploads: &Path,
    skip: &[PathBuf],
    share: Share,
    scope: &Scope,
    mut visit: impl FnMut(Entry) -> bool,
) {
    let root = uploads.canonicalize().unwrap_or_else(|_| uploads.to_path_buf());
    let skip: Vec<PathBuf> = skip.iter().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())).collect();
    let mut index = 0u64;
    // Every-other counts photos and junk only, as it always did; hashed shards take any entry
    // by its path, so that a refused file is reported by one shard, not by all.
    let mut offer = |bytes: &[u8], item: Entry| -> bool {
        if !scope.takes(bytes) {
            return true;
        }
        let counted = matches!(item, Entry::Photo { .. } | Entry::Junk { .. });
        let taken = match share {
            Share::EveryOther { .. } if !counted => true,
            _ => share.takes_photo(index, bytes),
        };
        if counted {
            index += 1;
        }
        !taken || visit(item)
    };
    if let Some(list) = &scope.photos {
        for relative in list {
            let path = uploads.join(std::ffi::OsStr::from_bytes(relative));
            let photo_name = PhotoName::from_bytes(relative);
            let item = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => Entry::Refused {
                    rel: photo_name.display,
                    cause: FailureCause::ListedFolder,
                    message: "a folder in --photos: list its photos, or use --include 'FOLDER/**'".into(),
                },
                Ok(meta) => classify(&root, &path, meta.file_type(), photo_name),
                Err(e) => Entry::Refused {
                    rel: photo_name.display,
                    cause: FailureCause::ListedNotFound,
                    message: format!("listed in --photos but cannot be found in Uploads: {e}"),
                },
            };
            if !offer(relative, item) {
                return;
            }
        }
        return;
    }
    let walker = walkdir::WalkDir::new(uploads).follow_links(false).sort_by_file_name().into_iter();
    let walker = walker.filter_entry(|e| {
        let canonical = e.path().canonicalize().unwrap_or_else(|_| e.path().to_path_buf());
        !(e.file_type().is_dir() && skip.contains(&canonical))
    });
    let relative_bytes = |path: &Path| -> Vec<u8> {
        let components: Vec<&[u8]> = path
            .strip_prefix(uploads)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().as_bytes())
            .collect();
        components.join(&b'/')
    };
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let bytes = e.path().map(relative_bytes).unwrap_or_default();
                let item = Entry::Refused {
                    rel: PhotoName::from_bytes(&bytes).display,
                    cause: FailureCause::UnreadableDirectory,
                    message: format!(
                        "cannot read: {}",
                        e.io_error().map_or(e.to_string(), |io| io.to_string())
                    ),
                };
                if !offer(&bytes, item) {
                    return;
                }
                continue;
            }
        };
        if entry.file_type().is_dir() {
            continue;
        }
        let bytes = relative_bytes(entry.path());
        let item = classify(&root, entry.path(), entry.file_type(), PhotoName::from_bytes(&bytes));
        if !offer(&bytes, item) {
            return;
        }
    }
}

/// What the file at `path` (not a directory) is to a run.
fn classify(root: &Path, path: &Path, file_type: std::fs::FileType, photo_name: PhotoName) -> Entry {
    let rel = photo_name.display.clone();
    let junk = path.file_name().and_then(sniff::junk_name);
    if file_type.is_symlink() {
        match path.canonicalize() {
            Ok(target) if target.starts_with(root) && target.is_file() => match junk {
                Some(what) => Entry::Junk { name: photo_name, what },
                None => Entry::Photo { name: photo_name, path: path.to_path_buf() },
            },
            Ok(target) if !target.starts_with(root) => Entry::Refused {
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
            None => Entry::Photo { name: photo_name, path: path.to_path_buf() },
        }
    } else {
        Entry::Refused { rel, cause: FailureCause::NotARegularFile, message: "not a regular file".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path, skip: &[PathBuf], share: Share) -> Vec<String> {
        let mut out = Vec::new();
        walk(dir, skip, share, &Scope::default(), |e| {
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
        assert_eq!(
            names(dir.path(), &skip, Share::EveryOther { every: 2, offset: 0 }),
            ["a.jpg", "sub/c.jpg"]
        );
        assert_eq!(
            names(dir.path(), &skip, Share::EveryOther { every: 2, offset: 1 }),
            ["b.jpg", "sub/d.jpg"]
        );
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
        walk(dir.path(), &[], Share::ALL, &Scope::default(), |e| {
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

    #[test]
    fn a_photo_added_moves_no_other_photo_to_another_shard() {
        let dir = tempfile::tempdir().unwrap();
        let add = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        };
        (0..40).for_each(|i| add(&format!("d{}/p{i:02}.jpg", i % 3)));
        let shares: Vec<Share> = (0..3).map(|k| Share::Shard(Shard::new(k, 3).unwrap())).collect();
        let before: Vec<Vec<String>> = shares.iter().map(|s| names(dir.path(), &[], *s)).collect();
        assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 40);
        add("d0/a-new-one.jpg");
        add("aaa.jpg");
        let after: Vec<Vec<String>> = shares.iter().map(|s| names(dir.path(), &[], *s)).collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(b.iter().all(|n| a.contains(n)), "{b:?} {a:?}");
        }
        assert_eq!(after.iter().map(Vec::len).sum::<usize>(), 42);
        // The older every-other split shifts: the same addition moves photos between shares.
        let every: Vec<Vec<String>> =
            (0..3).map(|k| names(dir.path(), &[], Share::EveryOther { every: 3, offset: k })).collect();
        assert!(every.iter().zip(&after).any(|(e, a)| e != a));
    }

    #[test]
    fn a_photo_list_walks_only_its_paths_and_reports_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.jpg", "sub/b.jpg", "sub/c.jpg"] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let scope = Scope {
            photos: Some(vec![b"gone.jpg".to_vec(), b"sub".to_vec(), b"sub/c.jpg".to_vec()]),
            ..Scope::default()
        };
        let mut seen = Vec::new();
        walk(dir.path(), &[], Share::ALL, &scope, |e| {
            seen.push(match e {
                Entry::Photo { name, .. } => name.key,
                Entry::Junk { name, .. } => panic!("{} junk", name.key),
                Entry::Refused { rel, cause, .. } => format!("{rel}: {cause}"),
            });
            true
        });
        assert_eq!(seen, ["gone.jpg: not found", "sub: listed folder", "sub/c.jpg"]);
        let include = Scope {
            include: vec![super::super::scope::Glob::new("include", "sub/**").unwrap()],
            exclude: vec![super::super::scope::Glob::new("exclude", "*/c.*").unwrap()],
            ..Scope::default()
        };
        let mut seen = Vec::new();
        walk(dir.path(), &[], Share::ALL, &include, |e| {
            if let Entry::Photo { name, .. } = e {
                seen.push(name.key);
            }
            true
        });
        assert_eq!(seen, ["sub/b.jpg"]);
    }
}
