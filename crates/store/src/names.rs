//! How a photo's path (relative to Uploads) becomes its key in the stores, reversibly.
//!
//! File names on Linux are bytes, not text. A path that is valid UTF-8 is its own key, as
//! it always was. Any other path is keyed by its display form (each byte that is not UTF-8
//! written `\xNN`), `//`, and the hex of its exact bytes: `col\xff.jpg//636f6cff2e6a7067`.
//! No real relative path contains `//`, so the two kinds never collide; two distinct files
//! never share a key; and the exact bytes come back from the key ([`PhotoName::bytes_of_key`]).

use std::borrow::Cow;
use std::fmt::Write;

/// The separator between a non-UTF-8 path's display form and its bytes.
const BYTES_MARK: &str = "//";

/// A photo's path as the stores key it, and as messages show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhotoName {
    /// The store key (see the module documentation).
    pub key: String,
    /// For people: control characters and bytes that are not UTF-8 escaped.
    pub display: String,
}

impl PhotoName {
    /// The name of the photo at `relative` (Uploads-relative, `/`-separated bytes).
    pub fn from_bytes(relative: &[u8]) -> PhotoName {
        let display = escape_bytes(relative);
        let key = match std::str::from_utf8(relative) {
            Ok(text) => text.to_string(),
            Err(_) => {
                let mut key = format!("{display}{BYTES_MARK}");
                relative.iter().for_each(|b| write!(key, "{b:02x}").expect("writing to a String"));
                key
            }
        };
        PhotoName { key, display }
    }

    /// The exact path bytes a key stands for.
    pub fn bytes_of_key(key: &str) -> Vec<u8> {
        match key.rsplit_once(BYTES_MARK) {
            Some((_, hex)) if hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                hex::decode(hex).expect("checked hex digits")
            }
            _ => key.as_bytes().to_vec(),
        }
    }

    /// How a stored key is shown to people.
    pub fn display_of_key(key: &str) -> Cow<'_, str> {
        match key.rsplit_once(BYTES_MARK) {
            Some((display, hex)) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => Cow::Borrowed(display),
            _ => escape_controls(key),
        }
    }
}

/// `bytes` for a terminal or a log line: UTF-8 text as is, control characters as `\n`,
/// `\t`, `\u{1b}`..., and each byte that is not UTF-8 as `\xNN`.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape_controls(chunk.valid()));
        chunk.invalid().iter().for_each(|b| write!(out, "\\x{b:02x}").expect("writing to a String"));
    }
    out
}

/// `text` with its control characters escaped (as Rust writes them in string literals).
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_get_distinct_reversible_keys() {
        let (ff, fe) =
            (PhotoName::from_bytes(b"2024/col\xff.jpg"), PhotoName::from_bytes(b"2024/col\xfe.jpg"));
        assert_ne!(ff.key, fe.key);
        assert_eq!(ff.display, "2024/col\\xff.jpg");
        assert_eq!(PhotoName::bytes_of_key(&ff.key), b"2024/col\xff.jpg");
        assert_eq!(PhotoName::display_of_key(&ff.key), "2024/col\\xff.jpg");
        // A UTF-8 name that looks like the display form is another file, with another key.
        let lookalike = PhotoName::from_bytes(b"2024/col\\xff.jpg");
        assert_ne!(lookalike.key, ff.key);
        assert_eq!(PhotoName::bytes_of_key(&lookalike.key), b"2024/col\\xff.jpg");
    }

    #[test]
    fn utf8_names_are_their_own_keys_and_display_escaped() {
        let name = PhotoName::from_bytes("été/line\nbreak.jpg".as_bytes());
        assert_eq!(name.key, "été/line\nbreak.jpg");
        assert_eq!(name.display, "été/line\\nbreak.jpg");
        assert_eq!(PhotoName::display_of_key(&name.key), "été/line\\nbreak.jpg");
        assert_eq!(PhotoName::bytes_of_key(&name.key), "été/line\nbreak.jpg".as_bytes());
    }
}
