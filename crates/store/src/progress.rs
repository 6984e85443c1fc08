//! What each shard of a run has done, recorded by the run itself as it goes, so that
//! `refacen status` can answer "how far is the migration?" across every host of a cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How many failed photos a progress document names (with their causes); the counts by cause
/// cover them all.
pub const FAILURES_KEPT: usize = 200;

/// One shard's progress towards one target (detector, its parameters, model and outputs).
/// A rerun of the shard (a pod recreated with the same index) replaces the document of the
/// run before it, adding to its cumulative counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardProgress {
    /// `<target>/<share>`: the document's key.
    pub key: String,
    /// A fingerprint of what the run produces: the same for every shard of one migration.
    pub target: String,
    /// `K/N` for `--shard` and the schedulers, `every N from K` for `--every-other`, `all`.
    pub shard: String,
    /// The host (pod name on Kubernetes) and process of the last run of this shard.
    pub host: String,
    pub pid: u32,
    /// Unix times (seconds): the first run of this shard started, the last one started, the
    /// last photo (or face) it committed, its last update of this document.
    pub first_started_at: i64,
    pub started_at: i64,
    pub last_commit_at: Option<i64>,
    pub updated_at: i64,
    /// How many runs of this shard there were (restarts after a kill or preemption included).
    pub runs: u32,
    /// The last run went through all of its shard (it was not stopped or killed).
    pub finished: bool,
    /// Counts of the last run.
    pub selected: u64,
    pub done: u64,
    pub up_to_date: u64,
    pub failed: u64,
    /// Counts over every run of this shard: committed work is never counted twice, since a
    /// rerun finds it up to date.
    pub total_done: u64,
    pub faces_new: u64,
    pub faces_kept: u64,
    pub faces_lost: u64,
    pub facens: u64,
    /// The failures of the last run, by cause.
    pub failures: BTreeMap<String, u64>,
    /// Photos (or faces) that failed in the last run, with the cause: the first [`FAILURES_KEPT`].
    pub failed_items: Vec<FailedItem>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedItem {
    /// The photo's store key (or `face N`).
    pub item: String,
    pub cause: String,
    pub message: String,
}

/// The fingerprint of what a run produces: its detector (name, version, sha256 and every
/// parameter's value), its model's sha256, and its outputs. Runs and `status` with the same
/// target agree on it.
pub fn target_fingerprint(
    detector: Option<&super::DetectorProvenance>,
    model: Option<&super::ModelProvenance>,
    outputs: &[String],
) -> String {
    use sha2::{Digest, Sha256};
    let described = serde_json::json!({
        "detector": detector,
        "model": model.map(|m| &m.sha256),
        "outputs": outputs,
    });
    hex::encode(&Sha256::digest(described.to_string().as_bytes())[..8])
}
