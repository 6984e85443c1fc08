//! What a run did, counted as it goes and reported at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use refacen_imaging::DecodeCause;
use refacen_runtime::GuestFailureKind;
use refacen_store::Copied;

/// Why a photo or a face failed. Summaries count failures per cause, under the cause's text
/// (which the JSON summary keeps as it always was).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCause {
    Decode(DecodeCause),
    Guest(GuestFailureKind),
    /// A face's landmarks could not be warped to the alignment template.
    Alignment,
    Thumbnail,
    /// A normalized face or thumbnail could not be encoded.
    Encoding,
    MissingNormalizedFace,
    CorruptNormalizedFace,
    UnreadableDirectory,
    SymlinkOutOfUploads,
    SymlinkedDirectory,
    SymlinkLoop,
    BrokenSymlink,
    NotARegularFile,
    /// A folder named in a `--photos` list (a list names photos).
    ListedFolder,
    /// A path in a `--photos` list that is not in Uploads.
    ListedNotFound,
    /// refacen itself failed on the photo (a panic caught at the worker): a bug to report.
    RefacenBug,
}

impl FailureCause {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::Decode(cause) => cause.as_str(),
            FailureCause::Guest(kind) => kind.as_str(),
            FailureCause::Alignment => "alignment",
            FailureCause::Thumbnail => "thumbnail",
            FailureCause::Encoding => "encoding",
            FailureCause::MissingNormalizedFace => "missing normalized face",
            FailureCause::CorruptNormalizedFace => "corrupt normalized face",
            FailureCause::UnreadableDirectory => "unreadable directory",
            FailureCause::SymlinkOutOfUploads => "symlink out of Uploads",
            FailureCause::SymlinkedDirectory => "symlinked directory",
            FailureCause::SymlinkLoop => "symlink loop",
            FailureCause::BrokenSymlink => "broken symlink",
            FailureCause::NotARegularFile => "not a regular file",
            FailureCause::ListedFolder => "listed folder",
            FailureCause::ListedNotFound => "not found",
            FailureCause::RefacenBug => "refacen-bug",
        }
    }
}

impl From<DecodeCause> for FailureCause {
    fn from(cause: DecodeCause) -> Self {
        FailureCause::Decode(cause)
    }
}

impl From<GuestFailureKind> for FailureCause {
    fn from(kind: GuestFailureKind) -> Self {
        FailureCause::Guest(kind)
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureCause {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

// Ordered by text, so that summaries list causes alphabetically.
impl Ord for FailureCause {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for FailureCause {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Time spent per stage, summed over workers.
#[derive(Clone, Copy, Debug, Default, Serialize, derive_more::AddAssign)]
pub struct StageTimes {
    pub read_decode: Duration,
    pub detect: Duration,
    pub normalize: Duration,
    pub embed: Duration,
    pub commit: Duration,
}

/// What a run's counts count: photos when it detects, faces when it only embeds again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    #[default]
    Photos,
    Faces,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Photos => "photos",
            Unit::Faces => "faces",
        })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Photos (or, with `--regenerate facens` alone, faces) this run looked at.
    pub selected: u64,
    /// Already regenerated with the same detector, model and settings.
    pub up_to_date: u64,
    pub done: u64,
    pub failed: u64,
    pub failures: BTreeMap<FailureCause, u64>,
    /// Files that are not images (videos, sidecars, folder metadata): neither done nor failed.
    pub skipped: u64,
    /// Photos detected at a smaller size than stored (`--max-size`, or too large for the detector).
    pub scaled_down: u64,
    /// The first failure messages, for the log.
    pub failure_examples: Vec<String>,
    /// The first failures with their causes, for the run's progress record.
    #[serde(skip)]
    pub failures_recorded: Vec<(FailureCause, String)>,
    pub faces_new: u64,
    pub faces_kept: u64,
    pub faces_lost: u64,
    pub facens: u64,
    pub elapsed: Duration,
    pub stages: StageTimes,
    pub dry_run: bool,
    /// `photos` or `faces`: what `selected`, `done`... count.
    pub unit: Unit,
    /// Where face records went.
    pub face_store: String,
    /// Where facens were copied for search, if anywhere.
    pub search_store: Option<String>,
    /// Copies this run's records made in the search store.
    pub search_copied: Copied,
    /// Copies of records an earlier, interrupted run left pending.
    pub search_caught_up: Copied,
    /// The run was stopped (SIGINT or SIGTERM) before it had taken every photo or face.
    pub interrupted: bool,
    /// Guest instances that worked in parallel.
    pub workers: usize,
    /// Threads of the CPU backend's pool (which also runs the CPU-side work of a GPU run).
    pub threads: usize,
}

/// How many failure messages a summary keeps.
const EXAMPLES: usize = 20;

impl Summary {
    pub fn fail(&mut self, cause: FailureCause, message: String) {
        self.failed += 1;
        *self.failures.entry(cause).or_default() += 1;
        if self.failures_recorded.len() < refacen_store::FAILURES_KEPT {
            self.failures_recorded.push((cause, message.clone()));
        }
        if self.failure_examples.len() < EXAMPLES {
            self.failure_examples.push(message);
        }
    }

    /// Counts a file that is not an image; `message` goes to stderr when `list` is set.
    pub fn skip(&mut self, message: &str, list: bool) {
        self.skipped += 1;
        if list {
            eprintln!("skipped: {message}");
        }
    }

    pub fn faces(&self) -> u64 {
        self.faces_new + self.faces_kept
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let verb = if self.dry_run { " (would be)" } else { "" };
        writeln!(
            f,
            "{} {}: {} selected, {} regenerated{}, {} up to date, {} failed",
            if self.dry_run { "dry run," } else { "regenerate:" },
            self.unit,
            self.selected,
            self.done,
            if self.dry_run { " (would be)" } else { "" },
            self.up_to_date,
            self.failed
        )?;
        if self.unit == Unit::Photos {
            writeln!(
                f,
                "faces: {} new, {} kept (same id), {} lost{verb}; {} facens computed",
                self.faces_new, self.faces_kept, self.faces_lost, self.facens
            )?;
        } else {
            writeln!(f, "facens: {} computed", self.facens)?;
        }
        if self.skipped > 0 {
            writeln!(f, "skipped: {} not an image (--list-skipped names them)", self.skipped)?;
        }
        if self.scaled_down > 0 {
            writeln!(f, "{} photo(s) scaled down for detection (see --max-size)", self.scaled_down)?;
        }
        if !self.dry_run {
            writeln!(f, "face records: {}", self.face_store)?;
        }
        if let Some(search) = self.search_store.as_ref().filter(|_| !self.dry_run) {
            let (c, u) = (self.search_copied, self.search_caught_up);
            write!(
                f,
                "search store: {search}: {} facens copied, {} lost faces removed",
                c.facens, c.removed
            )?;
            if u != Copied::default() {
                write!(f, " (and {} facens, {} removals an earlier run left pending)", u.facens, u.removed)?;
            }
            writeln!(f)?;
        }
        if !self.failures.is_empty() {
            let causes: Vec<String> = self.failures.iter().map(|(c, n)| format!("{n} {c}")).collect();
            writeln!(f, "failures: {}", causes.join(", "))?;
        }
        let s = &self.stages;
        write!(
            f,
            "{:.1} s, {:.2} {}/s, {:.2} faces/s with {} workers and {} threads; stage time: \
             read+decode {:.1} s, detect {:.1} s, normalize {:.1} s, embed {:.1} s, commit {:.1} s",
            secs,
            self.done as f64 / secs,
            self.unit,
            self.faces().max(self.facens) as f64 / secs,
            self.workers,
            self.threads,
            s.read_decode.as_secs_f64(),
            s.detect.as_secs_f64(),
            s.normalize.as_secs_f64(),
            s.embed.as_secs_f64(),
            s.commit.as_secs_f64()
        )
    }
}
