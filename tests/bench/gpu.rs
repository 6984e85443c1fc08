//! The GPU benchmark: the CPU and wgpu backends side by side, layer by layer and end to end.
//!
//! `cargo bench --bench gpu -- [COMMAND]`, or from a pack made by `scripts/bench-gpu pack`:
//!
//! - `layers`: every Conv/Gemm/MatMul layer of the graphs the shipped guests load (taken from
//!   the wasi-nn host after a real detect and embed, so they are exactly what runs), timed on
//!   both backends: ms and GFLOP/s per layer, then the whole graph (for the GPU: upload, all
//!   layers in one submission, readback). P-Net on the first pyramid level of a 1 MP photo,
//!   R-Net on 128 crops, O-Net on 32, dlib-resnet-128 at batches 1, 16 and 64.
//! - `uploads N DIR`: writes a synthetic Uploads of N JPEG photos of about 1 MP made from the
//!   sample photos (scaled, flipped, shifted and tiled 2x2), 100 per subdirectory.
//! - `regenerate DIR`: `refacen regenerate` on DIR with `--device gpu` at each batch size, and
//!   a CPU baseline (`--device cpu --batch-size 16`) on every REFACEN_BENCH_CPU_EVERY-th photo:
//!   photos/s, faces/s, the stage split, and the ratio to the baseline.
//! - `all` (the default): `uploads` (REFACEN_BENCH_PHOTOS photos, default 2000, into
//!   target/bench-gpu-uploads), `layers`, `regenerate`.
//!
//! Environment: REFACEN_BIN (the refacen binary; default target/release/refacen, else the one
//! cargo built), REFACEN_GUEST_DIR (default target/guests), REFACEN_BENCH_FIXTURES (default
//! tests/fixtures/faces), REFACEN_GPU_ALLOW_SOFTWARE=1 (accept lavapipe: correct, slow),
//! REFACEN_BENCH_RUNS (default 5), REFACEN_BENCH_BATCHES (default 1,16,64),
//! REFACEN_BENCH_CPU_EVERY (default 8). Relative paths are taken from the current directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use refacen::nn::NodeTiming;
use refacen::nn::cpu::{CpuBackend, CpuExecutable};
use refacen::nn::gpu::{GpuBackend, GpuOptions};
use refacen::nn::{Executable, Graph, RunLimits, Tensor};
use refacen::runtime::{CodeCache, GuestLimits, GuestRuntime, NnHost, NnLimits};
use serde_json::Value;

use refacen_test_support::uploads as synthetic;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn allow_software() -> bool {
    std::env::var("REFACEN_GPU_ALLOW_SOFTWARE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"))
}

fn guest_dir() -> PathBuf {
    PathBuf::from(env_or("REFACEN_GUEST_DIR", "target/guests"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(env_or("REFACEN_BENCH_FIXTURES", "tests/fixtures/faces"))
}

fn refacen_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("REFACEN_BIN") {
        return bin.into();
    }
    let built = Path::new("target/release/refacen");
    if built.is_file() { built.to_path_buf() } else { env!("CARGO_BIN_EXE_refacen").into() }
}

fn sample_photos() -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(fixtures().join("images"))
        .unwrap_or_else(|e| panic!("{}: {e}", fixtures().join("images").display()))
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    photos
}

fn gpu_backend() -> GpuBackend {
    match GpuBackend::new(GpuOptions { allow_software: allow_software(), limits: RunLimits::default() }) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("no GPU to benchmark: {e}");
            std::process::exit(1);
        }
    }
}

fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// layers

/// The graphs nnd and dlib-resnet-128 load, after one real detect and one real embed.
fn guest_graphs() -> Vec<(String, Arc<Graph>)> {
    let nn = Arc::new(NnHost::new(Arc::new(CpuBackend::new(RunLimits::default())), NnLimits::default()));
    let runtime = GuestRuntime::new(nn.clone(), GuestLimits::default(), CodeCache::new(None)).unwrap();
    let load = |name: &str| {
        let path = guest_dir().join(format!("{name}.wasm"));
        runtime.load(&path).unwrap_or_else(|e| panic!("{e} (run `cargo xtask guests`)"))
    };
    let photo =
        refacen::imaging::decode_rgb(&fixtures().join("images/obama.jpg"), &Default::default()).unwrap();
    runtime.detector(load("nnd")).unwrap().detect(&photo, &[]).expect("nnd detects");
    let chip = image::open(fixtures().join("chips/obama_0.png")).unwrap().to_rgb8();
    runtime.embedder(load("dlib-resnet-128")).unwrap().embed(&[chip]).expect("dlib-resnet-128 embeds");

    let mut graphs: Vec<(String, Arc<Graph>)> =
        nn.loaded_graphs().into_iter().map(|g| (network_name(&g), g)).collect();
    graphs.sort_by_key(|(name, _)| {
        ["P-Net", "R-Net", "O-Net", "dlib-resnet-128"].iter().position(|n| n == name)
    });
    graphs
}

/// Which shipped network a graph is, from its input's shape.
fn network_name(graph: &Graph) -> String {
    let dims = &graph.inputs[0].dims;
    match dims.as_slice() {
        [_, None, None, Some(3)] => "P-Net".into(),
        [_, Some(24), Some(24), Some(3)] => "R-Net".into(),
        [_, Some(48), Some(48), Some(3)] => "O-Net".into(),
        [_, Some(3), Some(150), Some(150)] => "dlib-resnet-128".into(),
        _ => format!("{} {dims:?}", graph.name),
    }
}

fn input_shapes(network: &str) -> Vec<Vec<usize>> {
    match network {
        // The first pyramid level of a 1155x866 (1 MP) photo with min-face-size 30.
        "P-Net" => vec![vec![1, 346, 462, 3]],
        "R-Net" => vec![vec![128, 24, 24, 3]],
        "O-Net" => vec![vec![32, 48, 48, 3]],
        "dlib-resnet-128" => env_or("REFACEN_BENCH_BATCHES", "1,16,64")
            .split(',')
            .filter_map(|b| b.trim().parse().ok())
            .map(|b| vec![b, 3, 150, 150])
            .collect(),
        _ => vec![],
    }
}

/// Per-node medians (ms) over `runs` profiled runs after a warm-up, and the node list.
fn profile(runs: usize, mut run: impl FnMut() -> Vec<NodeTiming>) -> (Vec<f64>, Vec<NodeTiming>) {
    run();
    let mut samples: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    let mut last = Vec::new();
    for _ in 0..runs {
        let timings = run();
        for (i, t) in timings.iter().enumerate() {
            samples.entry(i).or_default().push(t.elapsed);
        }
        last = timings;
    }
    ((0..last.len()).map(|i| median_ms(samples.remove(&i).unwrap_or_default())).collect(), last)
}

fn whole_ms(runs: usize, exe: &dyn Executable, input: &Tensor) -> f64 {
    exe.run(vec![input.clone()]).unwrap();
    median_ms(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                exe.run(vec![input.clone()]).unwrap();
                started.elapsed()
            })
            .collect(),
    )
}

fn gflops(flops: u64, ms: f64) -> String {
    if flops > 0 && ms > 0.0 { format!("{:.1}", flops as f64 / ms / 1e6) } else { String::new() }
}

fn layers(gpu: &GpuBackend) {
    let runs = env_usize("REFACEN_BENCH_RUNS", 5);
    println!("## layers: CPU backend ({} threads) and {}", rayon::current_num_threads(), gpu.describe());
    println!("medians of {runs} runs; GPU layer times from GPU timestamps when the adapter has them");
    println!(
        "{:<18} {:<28} {:<5} {:>18} {:>9} {:>8} {:>9} {:>8} {:>8}",
        "net", "layer", "op", "output", "cpu ms", "GFLOP/s", "gpu ms", "GFLOP/s", "speedup"
    );
    for (network, graph) in guest_graphs() {
        let cpu = CpuExecutable::new(graph.clone(), RunLimits::default()).expect("CPU prepares");
        let gpu_exe = gpu.prepare_gpu(graph).expect("GPU prepares");
        for shape in input_shapes(&network) {
            let label = format!("{network}/{}", shape[0]);
            let n: usize = shape.iter().product();
            let input = Tensor::new(shape, (0..n).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect())
                .unwrap();
            let (cpu_ms, nodes) = profile(runs, || cpu.run_profiled(vec![input.clone()]).unwrap().1);
            let (gpu_ms, _) = profile(runs, || gpu_exe.run_profiled(vec![input.clone()]).unwrap().1);
            let (mut cpu_flops, mut cpu_conv_ms, mut gpu_conv_ms) = (0u64, 0.0, 0.0);
            for (i, t) in nodes.iter().enumerate().filter(|(_, t)| t.flops > 0) {
                let g = gpu_ms.get(i).copied().unwrap_or(f64::NAN);
                (cpu_flops, cpu_conv_ms, gpu_conv_ms) =
                    (cpu_flops + t.flops, cpu_conv_ms + cpu_ms[i], gpu_conv_ms + g);
                println!(
                    "{label:<18} {:<28} {:<5} {:>18} {:>9.3} {:>8} {:>9.3} {:>8} {:>7.2}x",
                    t.node,
                    t.op,
                    format!("{:?}", t.output_shape),
                    cpu_ms[i],
                    gflops(t.flops, cpu_ms[i]),
                    g,
                    gflops(t.flops, g),
                    cpu_ms[i] / g
                );
            }
            println!(
                "{label:<18} {:<28} {:<5} {:>18} {cpu_conv_ms:>9.3} {:>8} {gpu_conv_ms:>9.3} {:>8} {:>7.2}x",
                "conv/gemm layers",
                "",
                "",
                gflops(cpu_flops, cpu_conv_ms),
                gflops(cpu_flops, gpu_conv_ms),
                cpu_conv_ms / gpu_conv_ms
            );
            let (cpu_whole, gpu_whole) = (whole_ms(runs, &cpu, &input), whole_ms(runs, &gpu_exe, &input));
            println!(
                "{label:<18} {:<28} {:<5} {:>18} {cpu_whole:>9.3} {:>8} {gpu_whole:>9.3} {:>8} {:>7.2}x",
                "whole graph",
                "",
                "",
                gflops(cpu_flops, cpu_whole),
                gflops(cpu_flops, gpu_whole),
                cpu_whole / gpu_whole
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// uploads

fn uploads(count: usize, dir: &Path) {
    // Beside the directory, not in it (regenerate would take it for a photo): the count of a
    // finished generation.
    let marker = PathBuf::from(format!("{}.complete", dir.display()));
    if std::fs::read_to_string(&marker).is_ok_and(|c| c == count.to_string()) {
        println!("## uploads: {} already holds {count} photos", dir.display());
        return;
    }
    let started = Instant::now();
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_dir_all(dir);
    let samples: Vec<RgbImage> = sample_photos()
        .iter()
        .map(|p| refacen::imaging::decode_rgb(p, &Default::default()).unwrap())
        .collect();
    let bytes = synthetic::write_uploads(&samples, dir, count, 1.0);
    std::fs::write(&marker, count.to_string()).unwrap();
    println!(
        "## uploads: {count} photos ({:.0} MB) written to {} in {:.1} s",
        bytes as f64 / 1e6,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// regenerate

struct Run {
    label: String,
    photos: u64,
    faces: u64,
    seconds: f64,
    stages: String,
}

fn seconds(v: &Value) -> f64 {
    v["secs"].as_f64().unwrap_or(0.0) + v["nanos"].as_f64().unwrap_or(0.0) / 1e9
}

fn regenerate_once(uploads: &Path, label: &str, args: &[&str]) -> Run {
    let state = tempfile::Builder::new().prefix("refacen-bench-state-").tempdir().unwrap();
    let cache = Path::new("target/bench-gpu-cache");
    let out = Command::new(refacen_bin())
        .args(["regenerate", "--json", "--uploads"])
        .arg(uploads)
        .arg("--state-dir")
        .arg(state.path())
        .args(args)
        .env("REFACEN_GUEST_DIR", guest_dir())
        .env("REFACEN_CACHE_DIR", cache)
        .output()
        .expect("refacen runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!("{label}: no summary from refacen (exit {:?}): {stderr}", out.status.code())
        });
    if !out.status.success() {
        eprintln!("{label}: refacen exited {:?}: {stderr}", out.status.code());
    }
    let count = |k: &str| summary[k].as_u64().unwrap_or(0);
    let stages = summary["stages"]
        .as_object()
        .map(|s| s.iter().map(|(k, v)| format!("{k} {:.1}", seconds(v))).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    Run {
        label: label.to_string(),
        photos: count("done"),
        faces: count("faces_new") + count("faces_kept"),
        seconds: seconds(&summary["elapsed"]),
        stages,
    }
}

fn regenerate(dir: &Path) {
    let cpu_every = env_usize("REFACEN_BENCH_CPU_EVERY", 8).max(1).to_string();
    let batches: Vec<String> = env_or("REFACEN_BENCH_BATCHES", "1,16,64")
        .split(',')
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .collect();
    let software = if allow_software() { vec!["--gpu-allow-software"] } else { vec![] };
    println!("## regenerate {} (nnd + dlib-resnet-128, all outputs, default concurrency)", dir.display());
    let mut runs = vec![regenerate_once(
        dir,
        "cpu, batch 16",
        &["--device", "cpu", "--batch-size", "16", "--every-other", &cpu_every],
    )];
    for batch in &batches {
        let mut args = vec!["--device", "gpu", "--batch-size", batch.as_str()];
        args.extend(&software);
        runs.push(regenerate_once(dir, &format!("gpu, batch {batch}"), &args));
    }
    let baseline = runs[0].photos as f64 / runs[0].seconds;
    println!(
        "{:<15} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8}  stage seconds (summed over workers)",
        "run", "photos", "faces", "seconds", "photos/s", "faces/s", "vs cpu"
    );
    for r in &runs {
        let rate = r.photos as f64 / r.seconds;
        println!(
            "{:<15} {:>7} {:>7} {:>9.2} {:>9.1} {:>9.1} {:>7.2}x  {}",
            r.label,
            r.photos,
            r.faces,
            r.seconds,
            rate,
            r.faces as f64 / r.seconds,
            rate / baseline,
            r.stages
        );
    }
}

fn main() {
    // SAFETY: no other thread exists yet.
    unsafe { refacen::nn::gpu::provide_xdg_runtime_dir() };
    // `cargo bench` passes `--bench`; the command is the first other argument.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let default_dir = PathBuf::from("target/bench-gpu-uploads");
    match args.first().map(String::as_str).unwrap_or("all") {
        "layers" => layers(&gpu_backend()),
        "uploads" => {
            let count = args.get(1).and_then(|n| n.parse().ok()).expect("uploads N DIR");
            uploads(count, &args.get(2).map(PathBuf::from).unwrap_or(default_dir));
        }
        "regenerate" => regenerate(&args.get(1).map(PathBuf::from).unwrap_or(default_dir)),
        "all" => {
            let gpu = gpu_backend();
            uploads(env_usize("REFACEN_BENCH_PHOTOS", 2000), &default_dir);
            layers(&gpu);
            drop(gpu);
            regenerate(&default_dir);
        }
        other => {
            eprintln!("unknown command `{other}`: expected layers, uploads N DIR, regenerate DIR or all");
            std::process::exit(2);
        }
    }
}
