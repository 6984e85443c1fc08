//! A run's progress document ([`ShardProgress`]) in the face store: written when the run
//! starts, every few seconds while it commits, and when it ends, so that `refacen status`
//! sees every shard of a cluster run, including those killed since.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use refacen_pipeline::{Progress, Share, Summary};
use refacen_store::{FaceStore, FailedItem, ShardProgress, StoreError};

/// How often a running shard updates its document.
const INTERVAL: Duration = Duration::from_secs(5);

/// Passes updates on to the operator's progress display and keeps the latest for the record.
pub struct RunRecorder {
    display: Arc<dyn Progress>,
    latest: Mutex<Latest>,
}

#[derive(Default)]
struct Latest {
    summary: Option<Summary>,
    last_commit_at: Option<i64>,
}

impl Progress for RunRecorder {
    fn update(&self, summary: &Summary) {
        self.display.update(summary);
        let mut latest = self.latest.lock().unwrap();
        let committed = latest.summary.as_ref().is_none_or(|s| s.done != summary.done);
        if committed && summary.done > 0 {
            latest.last_commit_at = Some(now());
        }
        latest.summary = Some(summary.clone());
    }
}

/// The share as a progress document names it.
pub fn share_label(share: &Share) -> String {
    match share {
        Share::Shard(shard) => shard.to_string(),
        Share::EveryOther { every: 1, .. } => "all".to_string(),
        Share::EveryOther { every, offset } => format!("every {every} from {offset}"),
    }
}

/// This host's name: the pod's name on Kubernetes (its hostname), the node's under Slurm.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and the length is bounded below by a NUL search.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { String::new() }
}

pub(super) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl RunRecorder {
    pub fn new(display: Arc<dyn Progress>) -> Arc<RunRecorder> {
        Arc::new(RunRecorder { display, latest: Mutex::new(Latest::default()) })
    }

    /// Starts this run's document from the one of the shard's previous run (whose cumulative
    /// counts it carries on), and writes it.
    pub async fn start(
        store: &dyn FaceStore,
        target: &str,
        share: &Share,
    ) -> Result<ShardProgress, StoreError> {
        let shard = share_label(share);
        let key = format!("{target}/{shard}");
        let previous = store.shard_progress(&key).await?;
        let at = now();
        let base = match previous {
            Some(p) => ShardProgress {
                runs: p.runs + 1,
                first_started_at: p.first_started_at,
                total_done: p.total_done,
                faces_new: p.faces_new,
                faces_kept: p.faces_kept,
                faces_lost: p.faces_lost,
                facens: p.facens,
                last_commit_at: p.last_commit_at,
                ..ShardProgress::default()
            },
            None => ShardProgress { runs: 1, first_started_at: at, ..ShardProgress::default() },
        };
        let start = ShardProgress {
            key,
            target: target.to_string(),
            shard,
            host: host_name(),
            pid: std::process::id(),
            started_at: at,
            updated_at: at,
            ..base
        };
        store.put_shard_progress(&start).await?;
        Ok(start)
    }

    /// The document for the run so far, `base` being the one [`RunRecorder::start`] wrote.
    pub fn document(&self, base: &ShardProgress, finished: bool) -> ShardProgress {
        let latest = self.latest.lock().unwrap();
        let mut doc = base.clone();
        doc.updated_at = now();
        doc.finished = finished;
        if let Some(at) = latest.last_commit_at {
            doc.last_commit_at = Some(at);
        }
        if let Some(s) = &latest.summary {
            doc.selected = s.selected;
            doc.done = s.done;
            doc.up_to_date = s.up_to_date;
            doc.failed = s.failed;
            doc.total_done += s.done;
            doc.faces_new += s.faces_new;
            doc.faces_kept += s.faces_kept;
            doc.faces_lost += s.faces_lost;
            doc.facens += s.facens;
            doc.failures = s.failures.iter().map(|(c, n)| (c.to_string(), *n)).collect();
            doc.failed_items = s
                .failures_recorded
                .iter()
                .map(|(cause, message)| FailedItem {
                    item: message.split(": ").next().unwrap_or_default().to_string(),
                    cause: cause.to_string(),
                    message: message.clone(),
                })
                .collect();
        }
        doc
    }

    /// Writes the document every few seconds until the returned task is aborted.
    pub fn keep_writing(
        self: &Arc<Self>,
        store: Arc<dyn FaceStore>,
        base: ShardProgress,
    ) -> tokio::task::JoinHandle<()> {
        let recorder = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(INTERVAL).await;
                // A progress record that cannot be written costs the status, never the run.
                if let Err(e) = store.put_shard_progress(&recorder.document(&base, false)).await {
                    eprintln!("regenerate: cannot record this shard's progress: {e}");
                }
            }
        })
    }
}
