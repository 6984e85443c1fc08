//! What a scoped run takes (`--photos FILE`, `--include GLOB`, `--exclude GLOB`): one photo, a
//! folder, a list an application wrote. Paths are Uploads-relative bytes, as the walk names
//! them, so names that are not UTF-8 are selected like any other.

use std::path::{Component, Path, PathBuf};

use std::os::unix::ffi::OsStrExt;

/// A shell-style pattern over a whole Uploads-relative path: `*` matches within one folder
/// name, `**` across folders (`2024/**`, `**/*.heic`), `?` one byte other than `/`, `[abc]`
/// / `[a-z]` / `[!abc]` one byte of (or not of) a set. Matching is on bytes, case-sensitive.
#[derive(Clone, Debug)]
pub struct Glob {
    text: String,
    pattern: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("--{option} `{pattern}`: {problem}")]
    BadGlob { option: &'static str, pattern: String, problem: &'static str },
    #[error("--photos {list}: cannot read: {source}")]
    Unreadable {
        list: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--photos {list}, line {line}: `{path}` is not under Uploads ({uploads}): {why}; list paths relative \
         to Uploads, one per line"
    )]
    NotUnderUploads { list: String, line: usize, path: String, uploads: String, why: &'static str },
}

impl Glob {
    pub fn new(option: &'static str, text: &str) -> Result<Glob, ScopeError> {
        let bad = |problem| ScopeError::BadGlob { option, pattern: text.to_string(), problem };
        if text.is_empty() {
            return Err(bad("an empty pattern matches nothing"));
        }
        if text.starts_with('/') {
            return Err(bad("patterns are relative to Uploads: drop the leading /"));
        }
        let mut open = None;
        for (i, b) in text.bytes().enumerate() {
            match b {
                b'[' if open.is_none() => open = Some(i),
                b']' if open.is_some_and(|o| i > o + 1) => open = None,
                _ => {}
            }
        }
        if open.is_some() {
            return Err(bad("a [ without its ]"));
        }
        Ok(Glob { text: text.to_string(), pattern: text.as_bytes().to_vec() })
    }

    pub fn is_match(&self, path: &[u8]) -> bool {
        matches(&self.pattern, path)
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn matches(pattern: &[u8], path: &[u8]) -> bool {
    match pattern.first() {
        None => path.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            let mut rest = &pattern[2..];
            // `**/` also matches no folder at all.
            if rest.first() == Some(&b'/') {
                if matches(&rest[1..], path) {
                    return true;
                }
                rest = &rest[1..];
                return (0..path.len()).any(|i| path[i] == b'/' && matches(rest, &path[i + 1..]));
            }
            (0..=path.len()).any(|i| matches(rest, &path[i..]))
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            for i in 0..=path.len() {
                if matches(rest, &path[i..]) {
                    return true;
                }
                if path.get(i) == Some(&b'/') {
                    break;
                }
            }
            false
        }
        Some(b'?') => path.first().is_some_and(|&c| c != b'/') && matches(&pattern[1..], &path[1..]),
        Some(b'[') => {
            let Some(&c) = path.first() else { return false };
            let close = pattern[2..].iter().position(|&b| b == b']').map(|p| p + 2).expect("checked in new");
            let set = &pattern[1..close];
            let (negated, set) = match set.first() {
                Some(b'!' | b'^') if set.len() > 1 => (true, &set[1..]),
                _ => (false, set),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= (set[i]..=set[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            c != b'/' && hit != negated && matches(&pattern[close + 1..], &path[1..])
        }
        Some(&b) => path.first() == Some(&b) && matches(&pattern[1..], &path[1..]),
    }
}

/// What a run takes of Uploads.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// `--photos`: only these Uploads-relative paths, sorted and without repeats.
    pub photos: Option<Vec<Vec<u8>>>,
    /// `--include`: a path must match one of these (when there are any).
    pub include: Vec<Glob>,
    /// `--exclude`: a path matching any of these is left out.
    pub exclude: Vec<Glob>,
}

impl Scope {
    /// Whether the photo at `path` (Uploads-relative bytes) is in scope by the globs; the
    /// list of `--photos` is applied by walking only its paths.
    pub fn takes(&self, path: &[u8]) -> bool {
        (self.include.is_empty() || self.include.iter().any(|g| g.is_match(path)))
            && !self.exclude.iter().any(|g| g.is_match(path))
            && self
                .photos
                .as_ref()
                .is_none_or(|list| list.binary_search_by(|p| p.as_slice().cmp(path)).is_ok())
    }

    pub fn is_everything(&self) -> bool {
        self.photos.is_none() && self.include.is_empty() && self.exclude.is_empty()
    }
}

/// Reads a `--photos` list (`-`: stdin): one path per line, relative to Uploads (or absolute
/// and inside it); blank lines are ignored, a trailing `\r` is dropped. Paths are bytes, so
/// names that are not UTF-8 can be listed. A path that leaves Uploads (`..`, or absolute
/// elsewhere) or lies in refacen's own directories is refused, naming its line.
pub fn read_photo_list(
    list: &Path,
    uploads: &Path,
    own_dirs: &[PathBuf],
) -> Result<Vec<Vec<u8>>, ScopeError> {
    let name = list.display().to_string();
    let bytes = if list == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(list)
    }
    .map_err(|source| ScopeError::Unreadable { list: name.clone(), source })?;
    let root = uploads.canonicalize().unwrap_or_else(|_| uploads.to_path_buf());
    let mut paths = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let refuse = |why| ScopeError::NotUnderUploads {
            list: name.clone(),
            line: i + 1,
            path: refacen_store::PhotoName::from_bytes(line).display,
            uploads: uploads.display().to_string(),
            why,
        };
        let path = Path::new(std::ffi::OsStr::from_bytes(line));
        let relative = if path.is_absolute() {
            path.strip_prefix(&root)
                .or_else(|_| path.strip_prefix(uploads))
                .map_err(|_| refuse("an absolute path elsewhere"))?
        } else {
            path
        };
        let mut parts: Vec<&[u8]> = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => parts.push(part.as_bytes()),
                Component::CurDir => {}
                Component::ParentDir => return Err(refuse("`..` leads out of it")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse("an absolute path elsewhere"));
                }
            }
        }
        if parts.is_empty() {
            return Err(refuse("it is Uploads itself; leave --photos out to take everything"));
        }
        let full = root.join(std::ffi::OsStr::from_bytes(&parts.join(&b'/')));
        if own_dirs.iter().any(|d| full.starts_with(d.canonicalize().unwrap_or_else(|_| d.clone()))) {
            return Err(refuse("it is in refacen's own state or derived-files directory"));
        }
        paths.push(parts.join(&b'/'));
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> Glob {
        Glob::new("include", text).unwrap()
    }

    #[test]
    fn globs_match_whole_paths_and_stars_stay_in_their_folder() {
        assert!(glob("2024/*.jpg").is_match(b"2024/a.jpg"));
        assert!(!glob("2024/*.jpg").is_match(b"2024/trip/a.jpg"));
        assert!(glob("2024/**").is_match(b"2024/trip/a.jpg"));
        assert!(!glob("2024/**").is_match(b"2023/a.jpg"));
        assert!(glob("**/*.heic").is_match(b"a.heic"));
        assert!(glob("**/*.heic").is_match(b"x/y/a.heic"));
        assert!(!glob("*.heic").is_match(b"x/a.heic"));
        assert!(glob("IMG_00?[0-4].jpg").is_match(b"IMG_0013.jpg"));
        assert!(!glob("IMG_00?[0-4].jpg").is_match(b"IMG_0015.jpg"));
        assert!(glob("[!a]*").is_match(b"b.jpg"));
        assert!(!glob("[!a]*").is_match(b"a.jpg"));
        assert!(glob("col*.jpg").is_match(b"col\xff.jpg"));
        assert!(Glob::new("include", "a[b").is_err());
        assert!(Glob::new("include", "/abs/*").is_err());
    }

    #[test]
    fn photo_lists_are_relative_to_uploads_and_cannot_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = dir.path().join("uploads");
        std::fs::create_dir_all(uploads.join("state")).unwrap();
        let list = dir.path().join("list");
        let mut text = b"b.jpg\r\n\n./a/c.jpg\n".to_vec();
        text.extend_from_slice(uploads.as_os_str().as_bytes());
        text.extend_from_slice(b"/d\xff.jpg");
        text.extend_from_slice(b"\nb.jpg\n");
        std::fs::write(&list, &text).unwrap();
        let paths = read_photo_list(&list, &uploads, &[]).unwrap();
        assert_eq!(paths, [b"a/c.jpg".to_vec(), b"b.jpg".to_vec(), b"d\xff.jpg".to_vec()]);

        let refused = |text: &[u8]| {
            std::fs::write(&list, text).unwrap();
            read_photo_list(&list, &uploads, &[uploads.join("state")]).unwrap_err().to_string()
        };
        let e = refused(b"ok.jpg\n../secret.jpg\n");
        assert!(e.contains("line 2") && e.contains("`..`"), "{e}");
        assert!(refused(b"/etc/passwd\n").contains("absolute path elsewhere"));
        assert!(refused(b"state/faces.redb\n").contains("refacen's own"));
        assert!(refused(b"a/../../x.jpg\n").contains("`..`"));
        let not_utf8 = refused(b"../x\xff.jpg\n");
        assert!(not_utf8.contains("x\\xff.jpg"), "{not_utf8}");
    }
}
