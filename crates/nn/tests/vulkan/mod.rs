//! The Vulkan environment of the GPU test binaries (ops_gpu.rs, onnx_node_tests.rs): lavapipe
//! unless the caller chose a driver, and an XDG_RUNTIME_DIR for Mesa.

use std::path::Path;
use std::sync::Once;

const LAVAPIPE_ICD: &str = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";

/// Points the Vulkan loader at lavapipe (see the module comment). Runs once, before any test
/// creates a wgpu instance.
pub fn vulkan_environment() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let chosen = std::env::var_os("VK_DRIVER_FILES").is_some()
            || std::env::var_os("VK_ICD_FILENAMES").is_some()
            || std::env::var_os("REFACEN_GPU_TEST_ANY_DRIVER").is_some_and(|v| v == "1");
        // SAFETY: every test that touches the environment or creates a wgpu instance calls
        // this first, and `Once` holds them until it returns; nothing else in this test binary
        // reads these variables concurrently.
        unsafe {
            if !chosen && Path::new(LAVAPIPE_ICD).exists() {
                std::env::set_var("VK_DRIVER_FILES", LAVAPIPE_ICD);
            }
            if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                let dir = std::env::temp_dir().join(format!("refacen-xdg-{}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("creating XDG_RUNTIME_DIR");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .expect("chmod XDG_RUNTIME_DIR");
                std::env::set_var("XDG_RUNTIME_DIR", &dir);
            }
        }
    });
}
