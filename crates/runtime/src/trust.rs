//! The operator's list of trusted guests: sha256 digests of the `.wasm` files allowed to run.
//! With one configured, any other guest is refused when it is loaded, before any of its code
//! runs (its `info()` included). The format is `sha256sum`'s, so that
//! `sha256sum guests/*.wasm > trusted.txt` writes one after a review.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct TrustList {
    path: PathBuf,
    digests: HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustListError {
    #[error("cannot read the trusted-guest list {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}:{line}: `{text}` does not start with a sha256 digest (64 hex digits); the list holds \
         `sha256sum` lines, `<digest>  <file>`, and # comments"
    )]
    Syntax { path: PathBuf, line: usize, text: String },
}

impl TrustList {
    pub fn read(path: &Path) -> Result<Self, TrustListError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TrustListError::Read { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, TrustListError> {
        let mut digests = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // sha256sum marks binary mode with `*` before the file name; the digest comes first.
            let digest = line.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TrustListError::Syntax {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: line.into(),
                });
            }
            digests.insert(digest);
        }
        Ok(TrustList { path: path.to_path_buf(), digests })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn trusts(&self, sha256: &str) -> bool {
        self.digests.contains(sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sha256sum_output_and_refuses_anything_else() {
        let digest = "ab".repeat(32);
        let list = TrustList::parse(
            Path::new("t.txt"),
            &format!("# reviewed 2026-12-01\n{}  target/guests/nnd.wasm\n\n", digest.to_uppercase()),
        )
        .unwrap();
        assert!(list.trusts(&digest));
        assert!(!list.trusts(&"cd".repeat(32)));
        let err = TrustList::parse(Path::new("t.txt"), "nnd.wasm abc\n").unwrap_err().to_string();
        assert!(err.contains("t.txt:1") && err.contains("64 hex digits"), "{err}");
    }
}
