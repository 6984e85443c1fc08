//! The GPU (wgpu) backend end to end: the shipped guests find the same faces and compute the
//! same facens on it as on the CPU backend, and `--device` explains itself when no GPU can be
//! used.
//!
//! On a machine without a GPU these run on Mesa's lavapipe (software Vulkan; `apt-get install
//! mesa-vulkan-drivers libvulkan1`), accepted with REFACEN_GPU_ALLOW_SOFTWARE; with no Vulkan
//! driver at all they fail and say so. On a machine with a GPU the GPU is used.

use std::path::Path;

use serde_json::Value;

use crate::support::{f32s, faces, iou, photos, refacen, refacen_env, repo};

const LAVAPIPE_ICD: &str = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";
const GPU: [(&str, &str); 2] = [("REFACEN_DEVICE", "gpu"), ("REFACEN_GPU_ALLOW_SOFTWARE", "1")];

fn lavapipe() -> &'static str {
    assert!(
        Path::new(LAVAPIPE_ICD).is_file(),
        "{LAVAPIPE_ICD} is missing: install Mesa's Vulkan drivers \
         (`apt-get install -y --no-install-recommends mesa-vulkan-drivers libvulkan1`)"
    );
    LAVAPIPE_ICD
}

fn all_photos() -> Vec<String> {
    let mut paths: Vec<String> =
        std::fs::read_dir(photos()).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    paths.sort();
    paths
}

fn detect_json(env: &[(&str, &str)]) -> Vec<Value> {
    let mut args = vec!["detect".to_string(), "--json".into()];
    args.extend(all_photos());
    let out = refacen_env(&args, env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json_lines()
}

#[test]
fn detections_on_the_gpu_match_the_cpu() {
    let gpu = detect_json(&GPU);
    let cpu = detect_json(&[("REFACEN_DEVICE", "cpu")]);
    assert_eq!(gpu.len(), cpu.len());
    let mut compared = 0;
    for (g, c) in gpu.iter().zip(&cpu) {
        let image = c["image"].as_str().unwrap();
        assert_eq!(g["image"], c["image"]);
        assert_eq!(faces(g).len(), faces(c).len(), "{image}: face counts differ");
        for (i, (gf, cf)) in faces(g).iter().zip(faces(c)).enumerate() {
            let (gb, cb) = (f32s(&gf["bbox"]), f32s(&cf["bbox"]));
            let overlap = iou(&gb, &cb);
            assert!(overlap >= 0.999, "{image} face {i}: IoU {overlap} between {gb:?} and {cb:?}");
            let score = (gf["score"].as_f64().unwrap() - cf["score"].as_f64().unwrap()).abs();
            assert!(score <= 1e-3, "{image} face {i}: scores differ by {score}");
            let size = (cb[2] - cb[0]).max(cb[3] - cb[1]);
            for (gp, cp) in
                gf["landmarks"].as_array().unwrap().iter().zip(cf["landmarks"].as_array().unwrap())
            {
                let (gp, cp) = (f32s(gp), f32s(cp));
                let off = ((gp[0] - cp[0]).powi(2) + (gp[1] - cp[1]).powi(2)).sqrt();
                assert!(off <= 1e-3 * size, "{image} face {i}: landmark {gp:?} is {off} px from {cp:?}");
            }
            compared += 1;
        }
    }
    assert!(compared >= 8, "only {compared} faces compared");
}

#[test]
fn the_dlib_detector_on_the_gpu_matches_the_cpu() {
    // Two of the smaller photos: lavapipe runs the detector's tiled pyramid in seconds each,
    // but in over a minute on a 2-core machine busy with other builds; this test is about
    // equal answers, so the call limit is set far above that.
    let run = |env: &[(&str, &str)]| {
        let mut args = vec!["detect".to_string(), "--json".into(), "--detector".into(), "dlib".into()];
        args.extend(["--guest-timeout-ms".into(), "900000".into()]);
        args.extend(
            ["astronaut.png", "obama_partial_face.jpg"].map(|p| photos().join(p).display().to_string()),
        );
        let out = refacen_env(&args, env);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines()
    };
    let (gpu, cpu) = (run(&GPU), run(&[("REFACEN_DEVICE", "cpu")]));
    for (g, c) in gpu.iter().zip(&cpu) {
        assert_eq!(faces(g).len(), 1, "{g}");
        assert_eq!(faces(g).len(), faces(c).len());
        let (gf, cf) = (&faces(g)[0], &faces(c)[0]);
        assert_eq!(gf["bbox"], cf["bbox"], "boxes lie on the pixel grid: they must be equal");
        let score = (gf["score"].as_f64().unwrap() - cf["score"].as_f64().unwrap()).abs();
        assert!(score <= 1e-3, "scores differ by {score}");
    }
}

fn facens(env: &[(&str, &str)]) -> Vec<(String, Vec<f32>)> {
    let mut chips: Vec<String> = std::fs::read_dir(repo().join("tests/fixtures/faces/chips"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    chips.sort();
    let mut args = vec!["embed".to_string(), "--json".into(), "--aligned".into()];
    args.extend(chips);
    let out = refacen_env(&args, env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json_lines().iter().map(|l| (l["image"].as_str().unwrap().to_string(), f32s(&l["facen"]))).collect()
}

#[test]
fn facens_on_the_gpu_match_the_cpu() {
    let gpu = facens(&GPU);
    let cpu = facens(&[("REFACEN_DEVICE", "cpu")]);
    assert_eq!(gpu.len(), 7);
    assert_eq!(gpu.len(), cpu.len());
    for ((image, g), (_, c)) in gpu.iter().zip(&cpu) {
        assert_eq!(g.len(), 128);
        let distance = g.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
        assert!(distance <= 1e-3, "{image}: facens {distance} apart");
    }
}

#[test]
fn device_gpu_without_any_adapter_is_a_clear_error() {
    let none = "/nonexistent/no-vulkan-driver.json";
    let out = refacen_env(
        &["detect", "--device", "gpu", &crate::support::photo("astronaut.png")],
        &[("VK_DRIVER_FILES", none), ("VK_ICD_FILENAMES", none)],
    );
    out.assert_refused(&["--device gpu: no GPU adapter found", "mesa-vulkan-drivers"]);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn device_gpu_refuses_a_software_adapter_unless_allowed() {
    let only_lavapipe = [("VK_DRIVER_FILES", lavapipe()), ("REFACEN_GPU_ALLOW_SOFTWARE", "0")];
    let photo = crate::support::photo("astronaut.png");
    let out = refacen_env(&["detect", "--device", "gpu", &photo], &only_lavapipe);
    // The error names the adapter and the way to allow it.
    out.assert_refused(&["llvmpipe", "--gpu-allow-software"]);

    let out =
        refacen_env(&["detect", "--device", "gpu", "--gpu-allow-software", "--json", &photo], &only_lavapipe);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("GPU backend: llvmpipe"), "{}", out.stderr);
    assert_eq!(faces(&out.json_lines()[0]).len(), 1);
}

#[test]
fn device_auto_uses_the_cpu_when_only_a_software_adapter_exists() {
    let photo = crate::support::photo("astronaut.png");
    let out = refacen_env(
        &["detect", "--json", &photo],
        &[("VK_DRIVER_FILES", lavapipe()), ("REFACEN_DEVICE", "auto"), ("REFACEN_GPU_ALLOW_SOFTWARE", "0")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("networks run on the CPU backend")
            && out.stderr.contains("no hardware GPU among: llvmpipe"),
        "{}",
        out.stderr
    );
    assert_eq!(faces(&out.json_lines()[0]).len(), 1);
}

#[test]
fn an_unknown_device_is_refused() {
    let out = refacen(&["detect", "--device", "tpu", &crate::support::photo("astronaut.png")]);
    out.assert_refused(&["unknown device `tpu`: expected auto, gpu or cpu"]);
}
