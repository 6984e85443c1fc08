//! Long-run and core-count benchmarks of `refacen regenerate` (`scripts/bench-soak`).
//!
//! `soak`: regenerate over thousands of generated ~1 MP photos, sampling resident memory
//! (and GPU memory where `nvidia-smi` answers) every few seconds; prints the curve, the peak
//! and the slope over the second half. The goal is a flat slope: peak memory bounded by
//! workers x per-worker limits plus a constant, whatever the number of photos.
//!
//! `scaling`: CPU-backend photos/s at 1, 2, 4, 8 and 16 threads (`--threads`) on the same
//! photos, each with the default concurrency that follows from the threads, then the photos
//! at once swept at the largest thread count.
//!
//! Usage: `cargo bench --bench soak -- soak|scaling [--photos N] [--megapixels X]
//!         [--device cpu|gpu] [--threads N,N,...] [--concurrency N,N,...]`
//! Environment (for a pack run elsewhere): REFACEN_BIN, REFACEN_GUEST_DIR,
//! REFACEN_BENCH_FIXTURES (the sample photos' folder), REFACEN_BENCH_WORK (scratch space).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use refacen_test_support::{soak, uploads as synthetic};

struct Options {
    mode: String,
    photos: usize,
    megapixels: f64,
    device: String,
    threads: Vec<usize>,
    concurrency: Vec<usize>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let list = |name: &str, default: &[usize]| {
        value(name).map_or(default.to_vec(), |v| v.split(',').map(|n| n.parse().expect("a number")).collect())
    };
    let mode =
        args.iter().find(|a| ["soak", "scaling"].contains(&a.as_str())).cloned().unwrap_or("soak".into());
    Options {
        photos: value("--photos").map_or(if mode == "soak" { 3000 } else { 240 }, |v| v.parse().unwrap()),
        megapixels: value("--megapixels").map_or(1.0, |v| v.parse().unwrap()),
        device: value("--device").unwrap_or("cpu".into()),
        threads: list("--threads", &[1, 2, 4, 8, 16]),
        concurrency: list("--concurrency", &[]),
        mode,
    }
}

/// `name` from the environment, else `default` under the repository (as built here; a pack
/// run elsewhere, as on a lent GPU machine, sets them all).
fn path_setting(name: &str, default: &str) -> PathBuf {
    std::env::var_os(name).map(PathBuf::from).unwrap_or_else(|| refacen_test_support::repo().join(default))
}

fn regenerate(
    uploads: &Path,
    state: &Path,
    device: &str,
    env: &[(&str, String)],
    extra: &[String],
) -> Command {
    let binary =
        std::env::var_os("REFACEN_BIN").map_or(PathBuf::from(env!("CARGO_BIN_EXE_refacen")), PathBuf::from);
    let mut command = Command::new(binary);
    command
        .args(["regenerate", "--json", "--uploads"])
        .arg(uploads)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .env("REFACEN_DEVICE", device)
        .env("REFACEN_GUEST_DIR", path_setting("REFACEN_GUEST_DIR", "target/guests"))
        .env("REFACEN_CACHE_DIR", path_setting("REFACEN_BENCH_WORK", "target/bench-soak").join("cache"));
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

fn summary(run: &soak::SampledRun) -> Value {
    assert_eq!(run.code, 0, "regenerate failed:\n{}", run.stderr);
    serde_json::from_str(run.stdout.lines().last().expect("a summary")).expect("a JSON summary")
}

fn photos_per_s(summary: &Value) -> f64 {
    let secs =
        summary["elapsed"]["secs"].as_f64().unwrap() + summary["elapsed"]["nanos"].as_f64().unwrap() / 1e9;
    summary["done"].as_f64().unwrap() / secs
}

fn main() {
    let o = options();
    let work = path_setting("REFACEN_BENCH_WORK", "target/bench-soak");
    let uploads = work.join("uploads");
    for old in ["uploads", "state"] {
        let _ = std::fs::remove_dir_all(work.join(old));
    }
    let _ = std::fs::read_dir(&work).map(|entries| {
        entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("state-")).for_each(|e| {
            let _ = std::fs::remove_dir_all(e.path());
        })
    });
    eprintln!("generating {} photos of ~{} MP ...", o.photos, o.megapixels);
    let fixtures = path_setting("REFACEN_BENCH_FIXTURES", "tests/fixtures/faces").join("images");
    let mut samples: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("{}: {e}", fixtures.display()))
        .map(|e| e.unwrap().path())
        .collect();
    samples.sort();
    let samples: Vec<_> =
        samples.iter().map(|p| refacen::imaging::decode_rgb(p, &Default::default()).unwrap()).collect();
    synthetic::write_uploads(&samples, &uploads, o.photos, o.megapixels);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match o.mode.as_str() {
        "scaling" => {
            println!(
                "regenerate, {} photos of ~{} MP, {} backend, {cores} cores; photos/s by --threads",
                o.photos, o.megapixels, o.device
            );
            println!("{:>8} {:>8} {:>10} {:>14}", "threads", "workers", "photos/s", "vs 1 thread");
            let mut first = None;
            let mut run = |threads: usize, concurrency: Option<usize>| {
                let state = work.join(format!("state-{threads}-{concurrency:?}"));
                let extra: Vec<String> =
                    concurrency.map_or(vec![], |c| vec!["--concurrency".into(), c.to_string()]);
                let command = regenerate(
                    &uploads,
                    &state,
                    &o.device,
                    &[("REFACEN_THREADS", threads.to_string())],
                    &extra,
                );
                let s = summary(&soak::run_sampled(command, Duration::from_millis(500)));
                assert_eq!(s["failed"], 0, "{s}");
                let rate = photos_per_s(&s);
                let base = *first.get_or_insert(rate);
                println!(
                    "{threads:>8} {:>8} {rate:>10.2} {:>13.2}x",
                    s["workers"].as_u64().unwrap_or(0),
                    rate / base
                );
            };
            for &threads in &o.threads {
                run(threads, None);
            }
            let max = *o.threads.iter().max().unwrap();
            for &concurrency in &o.concurrency {
                run(max, Some(concurrency));
            }
        }
        _ => {
            let extra: Vec<String> =
                o.concurrency.first().map_or(vec![], |c| vec!["--concurrency".into(), c.to_string()]);
            let env: Vec<(&str, String)> = o
                .threads
                .first()
                .filter(|_| o.threads.len() == 1)
                .map_or(vec![], |t| vec![("REFACEN_THREADS", t.to_string())]);
            let run = soak::run_sampled(
                regenerate(&uploads, &work.join("state"), &o.device, &env, &extra),
                Duration::from_secs(2),
            );
            let s = summary(&run);
            let (first, second) = run.half_peaks_mib();
            println!(
                "soak: regenerate, {} photos of ~{} MP, {} backend, {cores} cores",
                o.photos, o.megapixels, o.device
            );
            println!("{}", run.curve(1));
            println!(
                "done {} failed {} in {:.0} s ({:.1} photos/s, {} workers, {} threads)",
                s["done"],
                s["failed"],
                run.elapsed.as_secs_f64(),
                photos_per_s(&s),
                s["workers"],
                s["threads"]
            );
            let gpu_peak = run
                .samples
                .iter()
                .filter_map(|s| s.gpu_mib)
                .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))));
            println!(
                "peak RSS {:.0} MiB (first half {first:.0}, second half {second:.0}); slope over the second half {:+.1} MiB/min{}",
                run.peak_rss_mib(),
                run.second_half_slope_mib_per_min(),
                gpu_peak.map_or(String::new(), |g| format!("; peak GPU memory in use {g:.0} MiB"))
            );
        }
    }
}
