//! The swappable variants side by side: each detector's time per photo and each model's time
//! per face, through the sandboxed guests on the CPU backend (and on a hardware GPU when the
//! machine has one), beside the reference implementations timed in the same run: dlib-bin's
//! CNN face detector + 5-point shape predictor (`reference_dlib.py`) for the `dlib` detector,
//! OpenCV 4.5.5's dnn running the original FaceNet graph (`reference_facenet.py`) for
//! `facenet-512`. Medians of REFACEN_BENCH_RUNS (default 5) runs after a warm-up.
//! `scripts/bench-variants` installs the references and runs this.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use refacen::nn::{Device, RunLimits, choose_backend};
use refacen::runtime::{CodeCache, GuestLimits, GuestRuntime, NnHost, NnLimits};

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e != "json" && e != "py"))
        .collect();
    paths.sort();
    paths
}

/// Runs a reference script with the Python of `venv` (or `$env_var`), if it is installed.
fn reference(
    repo: &Path,
    env_var: &str,
    venv: &str,
    script: &str,
    args: &[String],
) -> Option<serde_json::Value> {
    let python =
        std::env::var_os(env_var).map(PathBuf::from).unwrap_or_else(|| repo.join(venv).join("bin/python"));
    if !python.exists() {
        eprintln!("({script} not run: {} missing; run scripts/bench-variants)", python.display());
        return None;
    }
    let out = Command::new(&python).arg(repo.join("tests/bench").join(script)).args(args).output().ok()?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).ok()
}

struct Row {
    label: String,
    cells: Vec<Option<f64>>,
}

fn show(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn main() {
    let repo = refacen_test_support::repo();
    let runs: usize = std::env::var("REFACEN_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let photos = files(&repo.join("tests/fixtures/faces/images"));
    let chips = files(&repo.join("tests/fixtures/faces/chips"));
    let crops = files(&repo.join("tests/fixtures/facenet/crops"));
    let guests = repo.join("target/guests");

    let mut devices = vec![("CPU", Device::Cpu)];
    match choose_backend(Device::Gpu, false, RunLimits::default()) {
        Ok(gpu) => {
            eprintln!("GPU: {}", gpu.description);
            devices.push(("GPU", Device::Gpu));
        }
        Err(e) => eprintln!("(no GPU column: {e})"),
    }
    let runtimes: Vec<(&str, GuestRuntime)> = devices
        .iter()
        .map(|(label, device)| {
            let backend = choose_backend(*device, false, RunLimits::default()).unwrap().backend;
            let nn = Arc::new(NnHost::new(backend, NnLimits::default()));
            (*label, GuestRuntime::new(nn, GuestLimits::default(), CodeCache::new(None)).unwrap())
        })
        .collect();
    let load = |runtime: &GuestRuntime, name: &str| {
        runtime
            .load(&guests.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("{e} (run `cargo xtask guests`)"))
    };

    // Detectors: ms per photo.
    let photo_args: Vec<String> = photos.iter().map(|p| p.display().to_string()).collect();
    let mut dlib_args = vec![repo.join("target/weights/dlib").display().to_string(), runs.to_string()];
    dlib_args.extend(photo_args.iter().cloned());
    let dlib_bin =
        reference(&repo, "REFACEN_BENCH_DLIB_PYTHON", "target/dlib-venv", "reference_dlib.py", &dlib_args);
    let mut header = vec!["photo".to_string()];
    for (label, _) in &runtimes {
        header.push(format!("nnd {label}"));
        header.push(format!("dlib {label}"));
    }
    header.push("dlib-bin".into());
    let mut rows = Vec::new();
    let mut detectors: Vec<_> = runtimes
        .iter()
        .map(|(_, rt)| (rt.detector(load(rt, "nnd")).unwrap(), rt.detector(load(rt, "dlib")).unwrap()))
        .collect();
    for path in &photos {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let image = refacen::imaging::decode_rgb(path, &Default::default()).unwrap();
        let mut cells = Vec::new();
        for (nnd, dlib) in &mut detectors {
            cells.push(Some(time(runs, || drop(nnd.detect(&image, &[]).unwrap()))));
            cells.push(Some(time(runs, || drop(dlib.detect(&image, &[]).unwrap()))));
        }
        let reference = dlib_bin
            .as_ref()
            .and_then(|r| Some(r[&name]["detect_ms"].as_f64()? + r[&name]["landmarks_ms"].as_f64()?));
        cells.push(reference);
        rows.push(Row { label: format!("{name} {}x{}", image.width(), image.height()), cells });
    }
    print_table(
        &format!(
            "Detectors, ms per photo (median of {runs}; dlib and dlib-bin: CNN detector + 5-point landmarks)"
        ),
        &header,
        &rows,
    );
    let total = |col: usize| rows.iter().map(|r| r.cells[col]).sum::<Option<f64>>();
    if let (Some(ours), Some(theirs)) = (total(1), total(header.len() - 2)) {
        println!("dlib on the CPU backend is {:.2}x as fast as dlib-bin on these photos\n", theirs / ours);
    }

    // Models: ms per face, all faces of the set in one call.
    let load_faces = |paths: &[PathBuf]| -> Vec<image::RgbImage> {
        paths.iter().map(|p| refacen::imaging::decode_rgb(p, &Default::default()).unwrap()).collect()
    };
    let (chip_images, crop_images) = (load_faces(&chips), load_faces(&crops));
    let crop_args = vec!["--runs".to_string(), runs.to_string()];
    let opencv = reference(
        &repo,
        "REFACEN_BENCH_OPENCV_PYTHON",
        "target/facenet-venv",
        "reference_facenet.py",
        &crop_args,
    );
    let mut header = vec!["model".to_string(), "faces".into()];
    header.extend(runtimes.iter().map(|(label, _)| label.to_string()));
    header.push("reference".into());
    let mut rows = Vec::new();
    for (model, faces, reference) in [
        ("dlib-resnet-128", &chip_images, None),
        ("facenet-512", &crop_images, opencv.as_ref().and_then(|r| r["ms_per_face"].as_f64())),
    ] {
        if faces.is_empty() {
            continue;
        }
        let mut cells = vec![Some(faces.len() as f64)];
        for (_, rt) in &runtimes {
            let mut embedder = rt.embedder(load(rt, model)).unwrap();
            cells.push(Some(time(runs, || drop(embedder.embed(faces).unwrap())) / faces.len() as f64));
        }
        cells.push(reference);
        rows.push(Row { label: model.into(), cells });
    }
    print_table(
        &format!(
            "Models, ms per face (median of {runs}; reference for facenet-512: OpenCV 4.5.5 dnn, same crops)"
        ),
        &header,
        &rows,
    );
    if let Some(row) = rows.iter().find(|r| r.label == "facenet-512")
        && let (Some(ours), Some(theirs)) = (row.cells[1], *row.cells.last().unwrap())
    {
        println!("facenet-512 on the CPU backend is {:.2}x as fast as OpenCV's dnn per face", theirs / ours);
    }
}

fn print_table(title: &str, header: &[String], rows: &[Row]) {
    println!("{title}");
    let first = rows.iter().map(|r| r.label.len()).chain([header[0].len()]).max().unwrap_or(10);
    print!("{:<first$}", header[0]);
    for h in &header[1..] {
        print!(" {h:>12}");
    }
    println!();
    for row in rows {
        print!("{:<first$}", row.label);
        for cell in &row.cells {
            print!(" {:>12}", show(*cell));
        }
        println!();
    }
}
