//! Time and GFLOP/s of every layer of the shipped networks on the CPU backend, at the sizes
//! `nnd` runs them: P-Net on the first pyramid level of a 1 MP photo, R-Net on a batch of
//! 128 crops, O-Net on 32, MMOD on a quarter of `dlib`'s tiled pyramid, the embedders (dlib's ResNet, FaceNet) on batches of 16.
//! REFACEN_BENCH_ONLY=name runs one network; REFACEN_BENCH_BATCH sets the embedders' batch (default
//! 16). Medians of REFACEN_BENCH_RUNS (default 5) runs after a warm-up. REFACEN_BENCH_MODEL=path
//! with REFACEN_BENCH_SHAPE=n,c,h,w times that graph instead (one layer cut out of a network,
//! say).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use refacen::nn::cpu::CpuExecutable;
use refacen::nn::{self, RunLimits, Tensor};

fn main() {
    let runs: usize = std::env::var("REFACEN_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    println!("CPU backend, {} threads, median of {runs} runs", rayon::current_num_threads());
    println!("{:<8} {:<34} {:<12} {:>18} {:>9} {:>8}", "net", "node", "op", "output", "ms", "GFLOP/s");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = |path: &str| std::fs::read(repo.join(path)).expect("guest weights (cargo xtask weights)");
    let only = std::env::var("REFACEN_BENCH_ONLY").unwrap_or_default();
    let batch: usize = std::env::var("REFACEN_BENCH_BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(16);
    let mut nets = vec![
        ("P-Net", nnd::PNET_ONNX.to_vec(), vec![1, 364, 455, 3]),
        ("R-Net", nnd::RNET_ONNX.to_vec(), vec![128, 24, 24, 3]),
        ("O-Net", nnd::ONET_ONNX.to_vec(), vec![32, 48, 48, 3]),
        // dlib's MMOD detector on one 760 px wide tile strip, a quarter of the pyramid that
        // `dlib` builds for a 1200 px photo.
        ("MMOD", dlib::DETECTOR_ONNX.to_vec(), vec![1, 3, 1092, 760]),
        ("dlib128", weights("guests/dlib-resnet-128/weights/dlib_resnet_128.onnx"), vec![batch, 3, 150, 150]),
        ("facenet", weights("guests/facenet-512/weights/facenet_512.onnx"), vec![batch, 3, 160, 160]),
    ];
    if let Ok(model) = std::env::var("REFACEN_BENCH_MODEL") {
        let shape = std::env::var("REFACEN_BENCH_SHAPE").expect("REFACEN_BENCH_SHAPE=n,c,h,w with the model");
        let shape = shape.split(',').map(|d| d.trim().parse().expect("a dimension")).collect();
        nets = vec![("model", std::fs::read(&model).expect("REFACEN_BENCH_MODEL"), shape)];
    }
    for (net, onnx, shape) in nets {
        if !net.contains(&only) {
            continue;
        }
        let graph = Arc::new(nn::load_onnx(&onnx).expect("graph loads"));
        let exe = CpuExecutable::new(graph, RunLimits::default()).expect("graph prepares");
        let n: usize = shape.iter().product();
        let input =
            Tensor::new(shape, (0..n).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect()).unwrap();
        exe.run_profiled(vec![input.clone()]).unwrap();
        let mut samples: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
        let mut last = Vec::new();
        for _ in 0..runs {
            let (_, timings) = exe.run_profiled(vec![input.clone()]).unwrap();
            for (i, t) in timings.iter().enumerate() {
                samples.entry(i).or_default().push(t.elapsed);
            }
            last = timings;
        }
        let mut total = 0.0;
        for (i, t) in last.iter().enumerate() {
            let mut times = samples.remove(&i).unwrap();
            times.sort();
            let ms = times[times.len() / 2].as_secs_f64() * 1000.0;
            total += ms;
            let gflops =
                if t.flops > 0 { format!("{:.1}", t.flops as f64 / ms / 1e6) } else { String::new() };
            println!(
                "{net:<8} {:<34} {:<12} {:>18} {ms:>9.2} {gflops:>8}",
                t.node,
                t.op,
                format!("{:?}", t.output_shape)
            );
        }
        println!("{net:<8} {:<34} {:<12} {:>18} {total:>9.2}", "total", "", "");
    }
}
