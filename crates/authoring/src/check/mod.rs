//! `refacen guests check`: the conformance harness a guest author runs before handing a guest
//! to an operator.
//!
//! It loads the guest as `regenerate` would (world, imports, `info`), runs it on the sample
//! photos (a detector) or sample normalized faces (a model) and on odd synthetic inputs, twice,
//! and checks every answer through the host's own calls, whose [`contract`] checks are the
//! ones `regenerate` applies. It then compares the two runs (determinism), a batch of faces
//! with the same faces one at a time (models), runs each declared parameter at its default and
//! at another value, sends values of the wrong kind and an undeclared parameter (which must be
//! refused with `invalid-param`), and measures time and memory per call against the limits.
//!
//! A violation fails the check. What works but should be looked at is a warning: a call
//! slower than half of `--guest-timeout-ms` or memory over half of `--guest-memory-mb` (the
//! guest ran within its limits, but a slower or busier machine may push it over), answers
//! that differ between runs only by float rounding, a bad parameter value accepted or refused
//! with another error than `invalid-param`, an empty version or description.
//!
//! [`contract`]: refacen_runtime::contract

use std::path::{Path, PathBuf};
use std::time::Duration;

use refacen_face::{Face, ParamKind, ParamSpec, ParamValue, parse_params};
use refacen_imaging::{CANONICAL, DecodeError};
use refacen_runtime::{
    CallStats, Detector, Embedder, GuestComponent, GuestDirectory, GuestError, GuestFailureKind,
    GuestRuntime, LoadError, World,
};
use serde::{Serialize, Serializer};

use crate::samples::{self, Probe};

mod detector;
mod embedder;
mod report;

use report::Recorder;
pub use report::{Reason, Report, Row, Status};

/// What the command line hands the check besides the guest.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// `NAME=VALUE` settings the guest is checked with (detectors only).
    pub params: Vec<String>,
    /// The author's own photos (detector) or 150x150 normalized faces (model), checked before
    /// the built-in samples.
    pub samples: Vec<PathBuf>,
}

/// Why a check could not be run at all (as opposed to a guest failing it).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Find(LoadError),
    #[error("--param: {message}")]
    Param { message: String },
    #[error("--param: `{name}` is a model, and models take no parameters")]
    ParamsForModel { name: String },
    #[error("--sample {path}: {source}")]
    Sample {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },
    #[error(
        "--sample {path}: {width}x{height} is not a normalized face; a model is checked on 150x150 faces in \
         refacen's canonical geometry, as `regenerate` writes them"
    )]
    SampleSize { path: String, width: u32, height: u32 },
}

/// A check to run: a guest file or a name in the guest directory.
pub struct Check<'a> {
    pub runtime: &'a GuestRuntime,
    pub guest_dir: &'a Path,
    pub options: &'a CheckOptions,
}

/// What a guest's `info` declares of itself, as the report names it.
struct Declared {
    name: String,
    version: String,
}

impl Check<'_> {
    /// Checks the guest `spec` (a path: anything with a `/` or ending in `.wasm`; else a name
    /// a detector or model in the guest directory declares).
    pub fn run(&self, spec: &str) -> Result<Report, CheckError> {
        let mut rec = Recorder::default();
        let loaded = if spec.contains('/') || spec.ends_with(".wasm") {
            self.runtime.load(Path::new(spec))
        } else {
            Ok(self.find(spec)?)
        };
        let component = match loaded {
            Ok(component) => component,
            Err(e @ LoadError::Read { .. }) => return Err(CheckError::Find(e)),
            Err(e) => {
                rec.fail("load", None, Reason::Load, e.to_string());
                return Ok(rec.into_report(Path::new(spec), None, None));
            }
        };
        rec.pass(
            "world",
            None,
            format!(
                "{} (exports info and {})",
                component.world.describe(),
                match component.world {
                    World::Detector => "detect",
                    World::Embedder => "embed",
                }
            ),
        );
        rec.pass("imports", None, component.imports.join(", "));
        let declared = match component.world {
            World::Detector => match self.runtime.detector(component.clone()) {
                Ok(detector) => Some(self.detector(detector, &mut rec)?),
                Err(e) => {
                    load_failed(&mut rec, e);
                    None
                }
            },
            World::Embedder => match self.runtime.embedder(component.clone()) {
                Ok(embedder) => Some(self.embedder(embedder, &mut rec)?),
                Err(e) => {
                    load_failed(&mut rec, e);
                    None
                }
            },
        };
        Ok(rec.into_report(&component.path, Some(component.as_ref()), declared))
    }

    /// The detector or model declaring `name` in the guest directory.
    fn find(&self, name: &str) -> Result<std::sync::Arc<GuestComponent>, CheckError> {
        let dir = GuestDirectory::scan(self.runtime, self.guest_dir).map_err(CheckError::Find)?;
        match dir.find(World::Detector, name) {
            Err(LoadError::NotFound { .. }) => {}
            found => return found.map_err(CheckError::Find),
        }
        dir.find(World::Embedder, name).map_err(|e| match e {
            LoadError::NotFound { .. } => {
                let known: Vec<&str> = dir.entries.iter().map(|e| e.info.name()).collect();
                CheckError::Find(LoadError::NotFound {
                    world: "detector or model",
                    name: name.into(),
                    dir: self.guest_dir.to_path_buf(),
                    known: format!(
                        " (available: {})",
                        list(&known.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    ),
                })
            }
            other => CheckError::Find(other),
        })
    }

    /// The slowest call and the memory peak against the limits the check ran under.
    fn limits(&self, rec: &mut Recorder, nn: Option<refacen_runtime::NnUsage>) {
        let limits = self.runtime.limits();
        let held = nn.map(|u| {
            format!(
                "; it holds {} graph(s) ({:.1} MiB) in the host",
                u.graphs,
                u.graph_bytes as f64 / (1 << 20) as f64
            )
        });
        let Some((wall, slowest)) = rec.slowest.clone() else {
            return;
        };
        let timeout = limits.call_timeout;
        let detail = format!(
            "slowest call {:.0} ms ({slowest}) of {} ms allowed",
            wall.as_secs_f64() * 1e3,
            timeout.as_millis()
        );
        rec.pass_unless_near_limit(
            "time",
            wall * 2 > timeout,
            Reason::Slow,
            detail,
            "a slower or busier machine may push it past --guest-timeout-ms",
        );
        let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
        let detail = format!(
            "linear memory up to {:.1} MiB of {:.0} MiB allowed{}",
            mib(rec.memory_bytes),
            mib(limits.memory_bytes),
            held.unwrap_or_default()
        );
        rec.pass_unless_near_limit(
            "memory",
            rec.memory_bytes * 2 > limits.memory_bytes,
            Reason::MemoryHungry,
            detail,
            "larger photos may go over --guest-memory-mb",
        );
    }
}

fn load_failed(rec: &mut Recorder, error: LoadError) {
    match error {
        LoadError::Call(e) => rec.fail("info", None, Reason::Guest(e.failure.kind()), e.failure.to_string()),
        other => rec.fail("load", None, Reason::Load, other.to_string()),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// Fields an operator reads in `refacen guests` left empty.
fn lint_info(rec: &mut Recorder, version: &str, description: &str, params: &[ParamSpec]) {
    let mut empty: Vec<String> = Vec::new();
    if version.trim().is_empty() {
        empty.push("version".into());
    }
    if description.trim().is_empty() {
        empty.push("description".into());
    }
    empty.extend(params.iter().filter(|p| p.help.trim().is_empty()).map(|p| format!("help of `{}`", p.name)));
    if !empty.is_empty() {
        rec.warn("info", None, Reason::Incomplete, format!("empty: {}", empty.join(", ")));
    }
}

/// The first run: `call` (named `check`) on every probe, recording each answer as
/// `describe` puts it; the answers each later run is compared with.
fn first_run<T>(
    rec: &mut Recorder,
    check: &'static str,
    probes: &[Probe],
    mut call: impl FnMut(&Probe) -> (Result<T, GuestError>, CallStats),
    describe: impl Fn(&T) -> String,
) -> Vec<Option<T>> {
    let mut answers = Vec::with_capacity(probes.len());
    for probe in probes {
        let (answer, stats) = call(probe);
        answers.push(match answer {
            Ok(answer) => {
                rec.pass(check, Some(&probe.name), describe(&answer));
                rec.stats(stats, true);
                Some(answer)
            }
            Err(e) => {
                rec.call_failed(check, probe, &e, stats);
                None
            }
        });
    }
    answers
}

/// The second run: `call` (named `check`) again on every probe the first run answered, and
/// by how much each answer differs from the first (`difference`: `None` when it does not).
fn second_run<T, A>(
    rec: &mut Recorder,
    check: &'static str,
    answered: &[(&Probe, &T)],
    mut call: impl FnMut(&Probe) -> (Result<A, GuestError>, CallStats),
    difference: impl Fn(&T, &A) -> Option<f32>,
) -> Vec<(String, f32)> {
    let mut differences = Vec::new();
    for (probe, first) in answered {
        let (answer, stats) = call(probe);
        match answer {
            Ok(again) => {
                rec.observe(stats, || format!("{check} {}", probe.name));
                if let Some(d) = difference(first, &again) {
                    differences.push((probe.name.clone(), d));
                }
            }
            Err(e) => rec.call_failed(check, probe, &e, stats),
        }
    }
    differences
}

/// The determinism row: how far the second run's answers were from the first's.
fn determinism(rec: &mut Recorder, inputs: usize, differences: &[(String, f32)], rounding: f32) {
    let worst = differences.iter().fold(None::<&(String, f32)>, |w, d| match w {
        Some(w) if w.1 >= d.1 => Some(w),
        _ => Some(d),
    });
    match worst {
        None => {
            rec.pass("determinism", None, format!("the same answers on all {inputs} inputs, bit for bit"))
        }
        Some((input, d)) if *d <= rounding => rec.warn(
            "determinism",
            Some(input),
            Reason::Nondeterministic,
            format!(
                "{} input(s) answered differently the second time, by at most {d:.1e}",
                differences.len()
            ),
        ),
        Some((input, d)) => rec.fail(
            "determinism",
            Some(input),
            Reason::Nondeterministic,
            format!(
                "{} input(s) answered differently the second time ({})",
                differences.len(),
                if d.is_infinite() {
                    "another number of faces".to_string()
                } else {
                    format!("by up to {d:.3}")
                }
            ),
        ),
    }
}

/// The largest difference between two answers for one image (infinite for another number of
/// faces); `None` when they are the same bit for bit.
fn faces_difference(a: &[Face], b: &[Face]) -> Option<f32> {
    if a == b {
        return None;
    }
    if a.len() != b.len() {
        return Some(f32::INFINITY);
    }
    let values = |f: &Face| {
        f.bbox.into_iter().chain(f.landmarks.into_iter().flatten()).chain([f.score]).collect::<Vec<_>>()
    };
    let d = a
        .iter()
        .zip(b)
        .flat_map(|(x, y)| {
            values(x).into_iter().zip(values(y)).map(|(p, q)| (p - q).abs()).collect::<Vec<_>>()
        })
        .fold(0f32, f32::max);
    Some(if d.is_nan() { f32::INFINITY } else { d })
}

/// The largest difference between two facens, relative to the first's largest value.
fn facen_difference(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

/// Another valid-looking value of a parameter: 0.9 times a number (numbers are usually
/// thresholds, scales or sizes), 1 instead of 0, the other boolean; text has none to guess.
fn changed(spec: &ParamSpec) -> Option<ParamValue> {
    match spec.default {
        ParamValue::Float(0.0) => Some(ParamValue::Float(0.1)),
        // Rounded, so that the table shows 0.711 rather than 0.7110000000000001.
        ParamValue::Float(v) => Some(ParamValue::Float((v * 0.9 * 1e6).round() / 1e6)),
        ParamValue::Int(0) => Some(ParamValue::Int(1)),
        ParamValue::Int(v) => {
            let smaller = (v as f64 * 0.9).round() as i64;
            Some(ParamValue::Int(if smaller == v { v - 1 } else { smaller }))
        }
        ParamValue::Bool(v) => Some(ParamValue::Bool(!v)),
        ParamValue::Text(_) => None,
    }
}

/// A value of another kind than `kind`: the guest must refuse it as `invalid-param`.
fn wrong_kind(kind: ParamKind) -> ParamValue {
    match kind {
        ParamKind::Text => ParamValue::Bool(true),
        ParamKind::Float | ParamKind::Int | ParamKind::Bool => ParamValue::Text("not-a-value".into()),
    }
}

fn with_param(base: &[(String, ParamValue)], name: &str, value: ParamValue) -> Vec<(String, ParamValue)> {
    let mut params: Vec<(String, ParamValue)> = base.iter().filter(|(n, _)| n != name).cloned().collect();
    params.push((name.to_string(), value));
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(default: ParamValue) -> ParamSpec {
        ParamSpec { name: "p".into(), kind: ParamKind::Float, default, help: String::new() }
    }

    #[test]
    fn a_changed_value_differs_from_the_default() {
        for default in [
            ParamValue::Float(0.0),
            ParamValue::Float(0.79),
            ParamValue::Int(0),
            ParamValue::Int(1),
            ParamValue::Int(30),
            ParamValue::Bool(false),
        ] {
            let value = changed(&spec(default.clone())).expect("numbers and booleans have another value");
            assert_ne!(value, default);
        }
        assert_eq!(changed(&spec(ParamValue::Text("none".into()))), None);
    }

    #[test]
    fn answers_that_differ_only_in_count_are_infinitely_apart() {
        let face = Face { bbox: [1.0, 1.0, 5.0, 5.0], score: 0.5, landmarks: [[2.0, 2.0]; 5] };
        assert_eq!(faces_difference(std::slice::from_ref(&face), std::slice::from_ref(&face)), None);
        assert_eq!(faces_difference(std::slice::from_ref(&face), &[]), Some(f32::INFINITY));
        let mut moved = face.clone();
        moved.bbox[0] += 0.25;
        assert_eq!(faces_difference(&[face], &[moved]), Some(0.25));
    }
}
