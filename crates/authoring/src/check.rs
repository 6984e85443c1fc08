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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// Why a row failed or warned, as a stable name scripts and tests can match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A call failed; its kind as `regenerate`'s summaries name it ("guest timeout", …).
    Guest(GuestFailureKind),
    /// The file cannot be a guest: not a component, another world, an import refacen does not
    /// provide, a trust list that does not hold it.
    Load,
    /// Two runs on the same input answered differently.
    Nondeterministic,
    /// A face embedded in a batch got another facen than alone.
    BatchDiffers,
    /// A bad parameter value was accepted, or refused with another error than `invalid-param`.
    BadValueAccepted,
    /// A call took more than half of the time limit.
    Slow,
    /// The instance's memory grew past half of the memory limit.
    MemoryHungry,
    /// `info` leaves a field an operator reads empty.
    Incomplete,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Guest(kind) => kind.as_str(),
            Reason::Load => "not loadable",
            Reason::Nondeterministic => "nondeterministic",
            Reason::BatchDiffers => "batch differs",
            Reason::BadValueAccepted => "bad value accepted",
            Reason::Slow => "near the time limit",
            Reason::MemoryHungry => "near the memory limit",
            Reason::Incomplete => "incomplete info",
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One line of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub check: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<f64>,
}

/// What the check found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub world: Option<World>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub passed: bool,
    pub violations: usize,
    pub warnings: usize,
    pub checks: Vec<Row>,
}

impl Report {
    /// The failing rows: their checks, inputs and reasons.
    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.checks.iter().filter(|r| r.status == Status::Fail)
    }

    /// The report as a plain-text table, a verdict line last.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} {} {} ({}{})\n",
            self.world.map_or("guest", World::noun),
            self.name.as_deref().unwrap_or("?"),
            self.version.as_deref().unwrap_or(""),
            self.path.display(),
            self.sha256.as_deref().map(|s| format!(", sha256 {}", &s[..16])).unwrap_or_default(),
        );
        let input_width =
            self.checks.iter().filter_map(|r| r.input.as_ref()).map(|i| i.len()).max().unwrap_or(0);
        for row in &self.checks {
            let status = match row.status {
                Status::Pass => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let wall = row.wall_ms.map(|ms| format!("{ms:>9.1} ms")).unwrap_or_else(|| " ".repeat(12));
            let memory = row.memory_mib.map(|m| format!("{m:>7.1} MiB")).unwrap_or_else(|| " ".repeat(11));
            let reason = row.reason.map(|r| format!("[{}] ", r.as_str())).unwrap_or_default();
            out.push_str(&format!(
                "{status} {:<12} {:<input_width$} {wall} {memory}  {reason}{}\n",
                row.check,
                row.input.as_deref().unwrap_or(""),
                row.detail
            ));
        }
        out.push_str(&if self.passed {
            format!("passed: {} checks, {} warning(s)\n", self.checks.len(), self.warnings)
        } else {
            let reasons: Vec<String> = self
                .failures()
                .map(|r| {
                    let on = r.input.as_ref().map(|i| format!(" on {i}")).unwrap_or_default();
                    format!("{}{on}: {}", r.check, r.reason.map_or("", Reason::as_str))
                })
                .collect();
            format!("FAILED: {} violation(s): {}\n", self.violations, reasons.join("; "))
        });
        out
    }
}

/// The rows as they are found, and what the limit row sums up.
struct Recorder {
    rows: Vec<Row>,
    slowest: Option<(Duration, String)>,
    memory_bytes: usize,
}

impl Recorder {
    fn push(
        &mut self,
        check: &'static str,
        input: Option<&str>,
        status: Status,
        reason: Option<Reason>,
        detail: String,
    ) {
        self.rows.push(Row {
            check,
            input: input.map(str::to_string),
            status,
            reason,
            detail,
            wall_ms: None,
            memory_mib: None,
        });
    }

    fn pass(&mut self, check: &'static str, input: Option<&str>, detail: String) {
        self.push(check, input, Status::Pass, None, detail);
    }

    fn warn(&mut self, check: &'static str, input: Option<&str>, reason: Reason, detail: String) {
        self.push(check, input, Status::Warn, Some(reason), detail);
    }

    fn fail(&mut self, check: &'static str, input: Option<&str>, reason: Reason, detail: String) {
        self.push(check, input, Status::Fail, Some(reason), detail);
    }

    /// Attaches a call's figures to the last row; a call that succeeded counts for the limits.
    fn stats(&mut self, stats: CallStats, succeeded: bool) {
        let Some(row) = self.rows.last_mut() else { return };
        row.wall_ms = Some(stats.wall.as_secs_f64() * 1e3);
        row.memory_mib = Some(stats.memory_bytes as f64 / (1 << 20) as f64);
        if succeeded {
            let call = format!("{} {}", row.check, row.input.as_deref().unwrap_or_default());
            self.observe(stats, || call);
        }
    }

    /// Counts a call that succeeded for the limits, without a row of its own; `call` names it.
    fn observe(&mut self, stats: CallStats, call: impl FnOnce() -> String) {
        if self.slowest.as_ref().is_none_or(|(wall, _)| stats.wall > *wall) {
            self.slowest = Some((stats.wall, call()));
        }
        self.memory_bytes = self.memory_bytes.max(stats.memory_bytes);
    }

    /// Records a failed call: refusing an odd synthetic input with `invalid-input` is the
    /// contract's answer to it, anything else a violation.
    fn call_failed(&mut self, check: &'static str, probe: &Probe, error: &GuestError, stats: CallStats) {
        let kind = error.failure.kind();
        if probe.synthetic && kind == GuestFailureKind::InputRefused {
            self.pass(check, Some(&probe.name), format!("refused as invalid input: {}", error.failure));
        } else {
            self.fail(check, Some(&probe.name), Reason::Guest(kind), error.failure.to_string());
        }
        self.stats(stats, false);
    }

    fn into_report(
        self,
        path: &Path,
        component: Option<&GuestComponent>,
        name_version: Option<(String, String)>,
    ) -> Report {
        let violations = self.rows.iter().filter(|r| r.status == Status::Fail).count();
        let warnings = self.rows.iter().filter(|r| r.status == Status::Warn).count();
        let (name, version) = name_version.unzip();
        Report {
            path: path.to_path_buf(),
            sha256: component.map(|c| c.sha256.clone()),
            world: component.map(|c| c.world),
            name,
            version,
            passed: violations == 0,
            violations,
            warnings,
            checks: self.rows,
        }
    }
}

/// A check to run: a guest file or a name in the guest directory.
pub struct Check<'a> {
    pub runtime: &'a GuestRuntime,
    pub guest_dir: &'a Path,
    pub options: &'a CheckOptions,
}

impl Check<'_> {
    /// Checks the guest `spec` (a path: anything with a `/` or ending in `.wasm`; else a name
    /// a detector or model in the guest directory declares).
    pub fn run(&self, spec: &str) -> Result<Report, CheckError> {
        let mut rec = Recorder { rows: Vec::new(), slowest: None, memory_bytes: 0 };
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
        let name_version = match component.world {
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
        Ok(rec.into_report(&component.path, Some(component.as_ref()), name_version))
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

    fn detector(&self, mut detector: Detector, rec: &mut Recorder) -> Result<(String, String), CheckError> {
        let info = detector.info().clone();
        let params: Vec<String> =
            info.params.iter().map(|p| format!("{} ({:?}, default {})", p.name, p.kind, p.default)).collect();
        rec.pass(
            "info",
            None,
            format!("detector `{}` {}; parameters: {}", info.name, info.version, list(&params)),
        );
        lint_info(rec, &info.version, &info.description, &info.params);
        let base = parse_params(&info.params, &self.options.params, &info.name)
            .map_err(|message| CheckError::Param { message })?;
        let mut probes = samples::own(&self.options.samples)
            .map_err(|(path, source)| CheckError::Sample { path, source })?;
        probes.extend(samples::photos());

        // First run: every probe; the answers each later run is compared with.
        let mut first: Vec<Option<Vec<Face>>> = Vec::new();
        for probe in &probes {
            let answer = detector.detect(&probe.image, &base);
            let stats = detector.last_call();
            first.push(match answer {
                Ok(faces) => {
                    rec.pass("detect", Some(&probe.name), format!("{} face(s)", faces.len()));
                    rec.stats(stats, true);
                    Some(faces)
                }
                Err(e) => {
                    rec.call_failed("detect", probe, &e, stats);
                    None
                }
            });
        }
        let answered: Vec<(&Probe, &Vec<Face>)> =
            probes.iter().zip(&first).filter_map(|(p, f)| f.as_ref().map(|f| (p, f))).collect();

        // Second run: the same answers.
        let mut differences = Vec::new();
        for (probe, faces) in &answered {
            match detector.detect(&probe.image, &base) {
                Ok(again) => {
                    rec.observe(detector.last_call(), || format!("detect again {}", probe.name));
                    if let Some(d) = faces_difference(faces, &again) {
                        differences.push((probe.name.clone(), d));
                    }
                }
                Err(e) => rec.call_failed("detect again", probe, &e, detector.last_call()),
            }
        }
        determinism(rec, answered.len(), &differences, 1e-3);

        // Each parameter at another value than in the first run.
        for spec in &info.params {
            let set_by_operator = base.iter().any(|(n, _)| n == &spec.name);
            let value = if set_by_operator { Some(spec.default.clone()) } else { changed(spec) };
            let Some(value) = value else {
                rec.pass(
                    "param",
                    Some(&spec.name),
                    format!(
                        "a text parameter: checked at its default only; check other values with --param {}=VALUE",
                        spec.name
                    ),
                );
                continue;
            };
            let params = with_param(&base, &spec.name, value.clone());
            self.param_run(&mut detector, rec, &answered, &params, &spec.name, &value);
        }

        // Values the guest must refuse, and refuse cleanly.
        if let Some((probe, _)) = answered.first() {
            let mut bad: Vec<(String, ParamValue)> =
                info.params.iter().map(|s| (s.name.clone(), wrong_kind(s.kind))).collect();
            bad.push(("refacen-check-undeclared".into(), ParamValue::Int(1)));
            for (name, value) in bad {
                let params = with_param(&base, &name, value.clone());
                let answer = detector.detect(&probe.image, &params);
                let stats = detector.last_call();
                let input = format!("{name}={value:?}");
                match answer {
                    Err(e) if e.failure.kind() == GuestFailureKind::ParamRefused => {
                        rec.pass("bad value", Some(&input), e.failure.to_string())
                    }
                    Err(e) if matches!(e.failure, refacen_runtime::GuestFailure::Reported(_)) => rec.warn(
                        "bad value",
                        Some(&input),
                        Reason::BadValueAccepted,
                        format!("refused, but not as `invalid-param`: {}", e.failure),
                    ),
                    Err(e) => rec.fail("bad value", Some(&input), Reason::Guest(e.failure.kind()), e.failure.to_string()),
                    Ok(faces) => rec.warn(
                        "bad value",
                        Some(&input),
                        Reason::BadValueAccepted,
                        format!(
                            "accepted ({} face(s)); it should be refused with `invalid-param` (the host checks \
                             --param against info, other hosts may not)",
                            faces.len()
                        ),
                    ),
                }
                rec.stats(stats, false);
            }
        }
        self.limits(rec, detector.nn_usage());
        Ok((info.name, info.version))
    }

    /// One run over the inputs answered in the first run with `params`, stopping at the first
    /// failure.
    fn param_run(
        &self,
        detector: &mut Detector,
        rec: &mut Recorder,
        answered: &[(&Probe, &Vec<Face>)],
        params: &[(String, ParamValue)],
        name: &str,
        value: &ParamValue,
    ) {
        let input = format!("{name}={value}");
        let (mut faces_now, mut faces_before) = (0, 0);
        for (probe, faces) in answered {
            match detector.detect(&probe.image, params) {
                Ok(found) => {
                    rec.observe(detector.last_call(), || format!("param {input} {}", probe.name));
                    faces_now += found.len();
                    faces_before += faces.len();
                }
                Err(e) if e.failure.kind() == GuestFailureKind::ParamRefused => {
                    rec.pass("param", Some(&input), format!("refused with a clear error: {}", e.failure));
                    return;
                }
                Err(e) if probe.synthetic && e.failure.kind() == GuestFailureKind::InputRefused => {}
                Err(e) => {
                    rec.fail(
                        "param",
                        Some(&input),
                        Reason::Guest(e.failure.kind()),
                        format!("on {}: {}", probe.name, e.failure),
                    );
                    rec.stats(detector.last_call(), false);
                    return;
                }
            }
        }
        rec.pass(
            "param",
            Some(&input),
            format!(
                "{} input(s) answered: {faces_now} face(s) in all, {faces_before} before",
                answered.len()
            ),
        );
    }

    fn embedder(&self, mut embedder: Embedder, rec: &mut Recorder) -> Result<(String, String), CheckError> {
        let info = embedder.info().clone();
        if !self.options.params.is_empty() {
            return Err(CheckError::ParamsForModel { name: info.name });
        }
        let t = &info.template;
        rec.pass(
            "info",
            None,
            format!(
                "model `{}` {}; facen size {}; input {}x{}{}",
                info.name,
                info.version,
                info.facen_size,
                t.width,
                t.height,
                if t.same_geometry(&CANONICAL) { " (refacen's canonical template)" } else { "" }
            ),
        );
        lint_info(rec, &info.version, &info.description, &[]);
        let outside = t
            .landmarks
            .iter()
            .any(|[x, y]| *x < 0.0 || *y < 0.0 || *x > t.width as f32 || *y > t.height as f32);
        if outside {
            rec.fail(
                "template",
                None,
                Reason::Guest(GuestFailureKind::InvalidAnswer),
                format!(
                    "a template landmark lies outside the {}x{} input: {:?}",
                    t.width, t.height, t.landmarks
                ),
            );
        }

        let mut chips = samples::own(&self.options.samples)
            .map_err(|(path, source)| CheckError::Sample { path, source })?;
        if let Some(odd) =
            chips.iter().find(|c| (c.image.width(), c.image.height()) != (CANONICAL.width, CANONICAL.height))
        {
            return Err(CheckError::SampleSize {
                path: odd.name.clone(),
                width: odd.image.width(),
                height: odd.image.height(),
            });
        }
        chips.extend(samples::chips());
        // The faces as the host hands them to this model: warped to its template.
        let mut probes = Vec::new();
        for chip in chips {
            match refacen_pipeline::model_input(&chip.image, t) {
                Ok(image) => probes.push(Probe { image, ..chip }),
                Err(e) => {
                    rec.fail("template", Some(&chip.name), Reason::Guest(GuestFailureKind::InvalidAnswer), e)
                }
            }
        }

        let mut first: Vec<Option<Vec<f32>>> = Vec::new();
        for probe in &probes {
            let answer = embedder.embed(std::slice::from_ref(&probe.image));
            let stats = embedder.last_call();
            first.push(match answer {
                Ok(mut facens) => {
                    let facen = facens.pop().expect("checked: one facen per face");
                    let norm = facen.iter().map(|v| v * v).sum::<f32>().sqrt();
                    rec.pass(
                        "embed",
                        Some(&probe.name),
                        format!("{} values, L2 norm {norm:.4}", facen.len()),
                    );
                    rec.stats(stats, true);
                    Some(facen)
                }
                Err(e) => {
                    rec.call_failed("embed", probe, &e, stats);
                    None
                }
            });
        }
        let answered: Vec<(&Probe, &Vec<f32>)> =
            probes.iter().zip(&first).filter_map(|(p, f)| f.as_ref().map(|f| (p, f))).collect();

        // All answered faces in one call: the facens they got alone.
        let batch: Vec<image::RgbImage> = answered.iter().map(|(p, _)| p.image.clone()).collect();
        let input = format!("{} faces", batch.len());
        match embedder.embed(&batch) {
            Ok(facens) => {
                let worst = answered
                    .iter()
                    .zip(&facens)
                    .map(|((p, alone), batched)| (p.name.as_str(), facen_difference(alone, batched)))
                    .fold(("", 0f32), |a, b| if b.1 > a.1 { b } else { a });
                // Graphs may sum in another order at another batch size: float rounding only.
                if worst.1 <= 1e-4 {
                    rec.pass(
                        "batch",
                        Some(&input),
                        format!("the facens they get alone (largest difference {:.1e})", worst.1),
                    );
                } else {
                    rec.fail(
                        "batch",
                        Some(&input),
                        Reason::BatchDiffers,
                        format!(
                            "{} gets another facen in a batch than alone: relative difference {:.1e}",
                            worst.0, worst.1
                        ),
                    );
                }
                rec.stats(embedder.last_call(), true);
            }
            Err(e) => {
                rec.fail("batch", Some(&input), Reason::Guest(e.failure.kind()), e.failure.to_string());
                rec.stats(embedder.last_call(), false);
            }
        }
        match embedder.embed(&[]) {
            Ok(_) => rec.pass("batch", Some("no faces"), "no facens".into()),
            Err(e) => {
                rec.fail("batch", Some("no faces"), Reason::Guest(e.failure.kind()), e.failure.to_string())
            }
        }

        let mut differences = Vec::new();
        for (probe, facen) in &answered {
            match embedder.embed(std::slice::from_ref(&probe.image)) {
                Ok(again) => {
                    rec.observe(embedder.last_call(), || format!("embed again {}", probe.name));
                    let d = facen_difference(facen, &again[0]);
                    if d > 0.0 {
                        differences.push((probe.name.clone(), d));
                    }
                }
                Err(e) => rec.call_failed("embed again", probe, &e, embedder.last_call()),
            }
        }
        determinism(rec, answered.len(), &differences, 1e-5);
        self.limits(rec, embedder.nn_usage());
        Ok((info.name, info.version))
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
        if wall * 2 > timeout {
            rec.warn(
                "time",
                None,
                Reason::Slow,
                format!("{detail}: a slower or busier machine may push it past --guest-timeout-ms"),
            );
        } else {
            rec.pass("time", None, detail);
        }
        let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
        let detail = format!(
            "linear memory up to {:.1} MiB of {:.0} MiB allowed{}",
            mib(rec.memory_bytes),
            mib(limits.memory_bytes),
            held.unwrap_or_default()
        );
        if rec.memory_bytes * 2 > limits.memory_bytes {
            rec.warn(
                "memory",
                None,
                Reason::MemoryHungry,
                format!("{detail}: larger photos may go over --guest-memory-mb"),
            );
        } else {
            rec.pass("memory", None, detail);
        }
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
        assert_eq!(faces_difference(&[face.clone()], &[face.clone()]), None);
        assert_eq!(faces_difference(&[face.clone()], &[]), Some(f32::INFINITY));
        let mut moved = face.clone();
        moved.bbox[0] += 0.25;
        assert_eq!(faces_difference(&[face], &[moved]), Some(0.25));
    }
}
