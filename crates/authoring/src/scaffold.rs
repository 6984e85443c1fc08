//! `refacen guests new`: a guest crate that builds with one `cargo build --release`, outside
//! this repository.
//!
//! The kit is vendored into the new crate (`kit/`: its sources and the WIT contract, built into
//! refacen from `guests/kit`), so the crate depends on nothing of this repository and stays
//! buildable as it is when refacen moves on: an author updates the copy on purpose, by running
//! `guests new` of a newer refacen elsewhere and copying its `kit/`. The crate is its own cargo
//! workspace and `.cargo/config.toml` selects wasm32-wasip2.

use std::path::{Path, PathBuf};

use onnx_proto::build::{Dim, attr_int, attr_ints, model, node, value_info_f32};
use prost::Message;

/// Which world the new guest implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    Detector,
    Embedder,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{name}` cannot name a guest crate: use 1-64 lowercase letters, digits and `-`, starting with a \
         letter (it is both the crate's name and the name operators select the guest by)"
    )]
    Name { name: String },
    #[error("{dir} exists and is not empty; choose a new directory (nothing was written)")]
    NotEmpty { dir: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The kit as the guests of this repository build with it, path by path.
const KIT: &[(&str, &str)] = &[
    ("kit/Cargo.toml", include_str!("../../../guests/kit/Cargo.toml")),
    ("kit/src/lib.rs", include_str!("../../../guests/kit/src/lib.rs")),
    ("kit/src/params.rs", include_str!("../../../guests/kit/src/params.rs")),
    ("kit/wit/refacen.wit", include_str!("../../../guests/kit/wit/refacen.wit")),
    ("kit/wit/deps/wasi-nn/wasi-nn.wit", include_str!("../../../guests/kit/wit/deps/wasi-nn/wasi-nn.wit")),
];

/// The file cargo builds for a guest crate named `name`.
pub fn component_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("target/wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")))
}

/// Writes a `kind` guest crate named `name` into `dir` (new, or empty) and returns the files
/// written.
pub fn new_guest(kind: GuestKind, name: &str, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(ScaffoldError::Name { name: name.into() });
    }
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::NotEmpty { dir: dir.to_path_buf() });
    }
    let (description, kind_word, flag, source) = match kind {
        GuestKind::Detector => (
            "A face detector for refacen",
            "detector",
            "detector",
            include_str!("../templates/detector.rs.in"),
        ),
        GuestKind::Embedder => (
            "A face-recognition model for refacen",
            "model (embedder)",
            "model",
            include_str!("../templates/embedder.rs.in"),
        ),
    };
    let fill = |template: &str| {
        template
            .replace("@NAME@", name)
            .replace("@DESCRIPTION@", description)
            .replace("@KIND@", kind_word)
            .replace("@FLAG@", flag)
            .replace("@FILE@", &name.replace('-', "_"))
    };
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("Cargo.toml".into(), fill(include_str!("../templates/Cargo.toml.in")).into_bytes()),
        (".cargo/config.toml".into(), include_str!("../templates/config.toml.in").into()),
        (".gitignore".into(), include_str!("../templates/gitignore.in").into()),
        ("README.md".into(), fill(include_str!("../templates/README.md.in")).into_bytes()),
        ("src/lib.rs".into(), fill(source).into_bytes()),
    ];
    files.extend(KIT.iter().map(|(path, text)| (path.to_string(), text.as_bytes().to_vec())));
    if kind == GuestKind::Embedder {
        files.push(("model.onnx".into(), colour_layout_graph()));
    }
    let mut written = Vec::new();
    for (relative, bytes) in files {
        let path = dir.join(relative);
        let write = |path: &Path| {
            std::fs::create_dir_all(path.parent().expect("a file under dir"))?;
            std::fs::write(path, &bytes)
        };
        write(&path).map_err(|source| ScaffoldError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// The example embedder's network: `faces` [N, 3, 150, 150] averaged over 50x50 cells into
/// [N, 3, 3, 3], flattened to 27-value facens.
fn colour_layout_graph() -> Vec<u8> {
    let batch = || Dim::Symbolic("N".into());
    let graph = onnx_proto::GraphProto {
        name: "colour-layout".into(),
        node: vec![
            node(
                "AveragePool",
                "cells",
                &["faces"],
                &["pooled"],
                vec![attr_ints("kernel_shape", &[50, 50]), attr_ints("strides", &[50, 50])],
            ),
            node("Flatten", "flatten", &["pooled"], &["facens"], vec![attr_int("axis", 1)]),
        ],
        input: vec![value_info_f32("faces", &[batch(), Dim::Fixed(3), Dim::Fixed(150), Dim::Fixed(150)])],
        output: vec![value_info_f32("facens", &[batch(), Dim::Fixed(27)])],
        ..Default::default()
    };
    model(graph, 13, "refacen guests new", env!("CARGO_PKG_VERSION"), "mean colour of a 3x3 grid")
        .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cargo_and_operators_both_take_are_the_only_ones_accepted() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "My-Guest", "1st", "a_b", "a/b"] {
            let err = new_guest(GuestKind::Detector, bad, &dir.path().join("x")).unwrap_err();
            assert!(matches!(err, ScaffoldError::Name { .. }), "{bad:?}: {err}");
        }
    }

    fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { files_under(&path, found) } else { found.push(path) }
        }
    }

    /// A file added to guests/kit must be vendored too, or new guests would not build.
    #[test]
    fn every_file_of_the_kit_is_vendored() {
        let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/kit");
        let mut files = Vec::new();
        files_under(&kit, &mut files);
        for file in files {
            let relative = Path::new("kit").join(file.strip_prefix(&kit).unwrap());
            assert!(
                KIT.iter().any(|(path, _)| Path::new(path) == relative),
                "{} is not in scaffold::KIT: add it",
                relative.display()
            );
        }
    }

    #[test]
    fn an_existing_directory_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let err = new_guest(GuestKind::Embedder, "model", dir.path()).unwrap_err();
        assert!(matches!(err, ScaffoldError::NotEmpty { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(), "mine");
    }
}
