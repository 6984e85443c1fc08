//! Soak runs: a `refacen` process whose memory is sampled as it goes. Shared by the short
//! soak in CI (`tests/e2e/long_runs.rs`) and the long one in `scripts/bench-soak`
//! (`tests/bench/soak.rs`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One memory sample of a run.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Duration,
    pub rss_mib: f64,
    /// GPU memory in use on the whole device (nvidia-smi), where there is one.
    pub gpu_mib: Option<f64>,
}

/// A finished sampled run.
pub struct SampledRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

impl SampledRun {
    pub fn peak_rss_mib(&self) -> f64 {
        self.samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max)
    }

    /// Peak RSS over the first and the second half of the run.
    pub fn half_peaks_mib(&self) -> (f64, f64) {
        let half = self.elapsed / 2;
        let peak = |second: bool| {
            self.samples.iter().filter(|s| (s.at >= half) == second).map(|s| s.rss_mib).fold(0.0, f64::max)
        };
        (peak(false), peak(true))
    }

    /// Least-squares slope of RSS over the second half, in MiB per minute.
    pub fn second_half_slope_mib_per_min(&self) -> f64 {
        let half = self.elapsed / 2;
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.at >= half)
            .map(|s| (s.at.as_secs_f64() / 60.0, s.rss_mib))
            .collect();
        let n = points.len() as f64;
        if n < 2.0 {
            return 0.0;
        }
        let (mx, my) =
            (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx == 0.0 { 0.0 } else { sxy / sxx }
    }

    /// The curve as text: one line per `every`-th sample.
    pub fn curve(&self, every: usize) -> String {
        self.samples
            .iter()
            .step_by(every.max(1))
            .map(|s| {
                let gpu = s.gpu_mib.map_or(String::new(), |g| format!("  gpu {g:>8.0} MiB"));
                format!("  {:>7.1} s  rss {:>8.1} MiB{gpu}", s.at.as_secs_f64(), s.rss_mib)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `command` to the end, sampling its resident memory every `interval`.
pub fn run_sampled(mut command: Command, interval: Duration) -> SampledRun {
    let started = Instant::now();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("refacen starts");
    let pid = child.id();
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let gpu = Command::new("nvidia-smi").arg("-L").output().is_ok_and(|o| o.status.success());
    let mut samples = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(rss_mib) = rss_mib(pid) {
            samples.push(Sample {
                at: started.elapsed(),
                rss_mib,
                gpu_mib: gpu.then(gpu_used_mib).flatten(),
            });
        }
        std::thread::sleep(interval);
    };
    SampledRun {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        samples,
        elapsed: started.elapsed(),
    }
}

/// Reads `pipe` to its end on a thread of its own (a child blocks once a pipe it writes is full).
pub fn read_in_background(
    pipe: Option<impl std::io::Read + Send + 'static>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn gpu_used_mib() -> Option<f64> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next()?.trim().parse().ok()
}
