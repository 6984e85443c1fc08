//! What a check found: its rows, the table and JSON they print as, and the recorder that
//! collects them.

use super::*;

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
#[derive(Default)]
pub(super) struct Recorder {
    rows: Vec<Row>,
    pub(super) slowest: Option<(Duration, String)>,
    pub(super) memory_bytes: usize,
}

impl Recorder {
    pub(super) fn push(
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

    pub(super) fn pass(&mut self, check: &'static str, input: Option<&str>, detail: String) {
        self.push(check, input, Status::Pass, None, detail);
    }

    pub(super) fn warn(&mut self, check: &'static str, input: Option<&str>, reason: Reason, detail: String) {
        self.push(check, input, Status::Warn, Some(reason), detail);
    }

    /// Passes `check`, or warns for `reason` when the guest came `near` a limit (used more
    /// than half of it), adding the `risk` that runs on other inputs or machines take.
    pub(super) fn pass_unless_near_limit(
        &mut self,
        check: &'static str,
        near: bool,
        reason: Reason,
        detail: String,
        risk: &str,
    ) {
        if near {
            self.warn(check, None, reason, format!("{detail}: {risk}"));
        } else {
            self.pass(check, None, detail);
        }
    }

    pub(super) fn fail(&mut self, check: &'static str, input: Option<&str>, reason: Reason, detail: String) {
        self.push(check, input, Status::Fail, Some(reason), detail);
    }

    /// Attaches a call's figures to the last row; a call that succeeded counts for the limits.
    pub(super) fn stats(&mut self, stats: CallStats, succeeded: bool) {
        let Some(row) = self.rows.last_mut() else { return };
        row.wall_ms = Some(stats.wall.as_secs_f64() * 1e3);
        row.memory_mib = Some(stats.memory_bytes as f64 / (1 << 20) as f64);
        if succeeded {
            let call = format!("{} {}", row.check, row.input.as_deref().unwrap_or_default());
            self.observe(stats, || call);
        }
    }

    /// Counts a call that succeeded for the limits, without a row of its own; `call` names it.
    pub(super) fn observe(&mut self, stats: CallStats, call: impl FnOnce() -> String) {
        if self.slowest.as_ref().is_none_or(|(wall, _)| stats.wall > *wall) {
            self.slowest = Some((stats.wall, call()));
        }
        self.memory_bytes = self.memory_bytes.max(stats.memory_bytes);
    }

    /// Records a failed call: refusing an odd synthetic input with `invalid-input` is the
    /// contract's answer to it, anything else a violation.
    pub(super) fn call_failed(
        &mut self,
        check: &'static str,
        probe: &Probe,
        error: &GuestError,
        stats: CallStats,
    ) {
        let kind = error.failure.kind();
        if probe.synthetic && kind == GuestFailureKind::InputRefused {
            self.pass(check, Some(&probe.name), format!("refused as invalid input: {}", error.failure));
        } else {
            self.fail(check, Some(&probe.name), Reason::Guest(kind), error.failure.to_string());
        }
        self.stats(stats, false);
    }

    pub(super) fn into_report(
        self,
        path: &Path,
        component: Option<&GuestComponent>,
        declared: Option<Declared>,
    ) -> Report {
        let violations = self.rows.iter().filter(|r| r.status == Status::Fail).count();
        let warnings = self.rows.iter().filter(|r| r.status == Status::Warn).count();
        let (name, version) = declared.map(|d| (d.name, d.version)).unzip();
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
