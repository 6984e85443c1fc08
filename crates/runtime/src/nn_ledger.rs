//! What all guest instances of a process hold in the host through wasi-nn together: the bytes
//! of their graphs (a graph several instances share through the cache is charged once), of
//! their tensors and of the computes running for them, and the number of their handles. Each
//! charge is a [`Hold`] that gives its share back when dropped, so whatever an instance holds
//! is released when the instance is thrown away, whatever state it was in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Ceilings on what all instances of the process hold together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessNnLimits {
    /// Bytes of graphs, tensors and running computes, all instances together.
    pub max_bytes: u64,
    /// Graph, context and tensor handles, all instances together.
    pub max_handles: u64,
}

impl ProcessNnLimits {
    /// Three quarters of the machine's memory (16 GiB where it cannot be told), and 2^18
    /// handles: the shipped guests hold a few hundred MiB and a handful of handles an instance.
    pub fn for_this_machine() -> Self {
        ProcessNnLimits { max_bytes: physical_memory().map_or(16 << 30, |m| m / 4 * 3), max_handles: 1 << 18 }
    }
}

/// The machine's physical memory in bytes, when the system says.
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && page > 0).then(|| (pages as u64).saturating_mul(page as u64))
}

/// What all instances hold now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessNnUsage {
    pub bytes: u64,
    pub handles: u64,
    /// Distinct graphs held by at least one instance.
    pub graphs: usize,
}

/// A charge refused: all instances together would hold more than the process may.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProcessNnLimitExceeded {
    #[error(
        "{what} would bring what all guest instances hold in the host to {} MiB, over the limit of {} MiB \
         for the whole process (--guest-nn-process-mb)",
        .held >> 20, .limit >> 20
    )]
    Bytes { what: String, held: u64, limit: u64 },
    #[error(
        "{what} would bring the wasi-nn handles all guest instances hold in the host to {held}, over the \
         limit of {limit} for the whole process"
    )]
    Handles { what: String, held: u64, limit: u64 },
}

/// The process's account.
pub struct NnLedger {
    limits: ProcessNnLimits,
    bytes: AtomicU64,
    handles: AtomicU64,
    /// The charge of each graph some instance holds, by the digest of its ONNX bytes.
    graphs: Mutex<HashMap<[u8; 32], Weak<GraphHold>>>,
}

impl NnLedger {
    pub fn new(limits: ProcessNnLimits) -> Arc<Self> {
        Arc::new(NnLedger {
            limits,
            bytes: AtomicU64::new(0),
            handles: AtomicU64::new(0),
            graphs: Mutex::new(HashMap::new()),
        })
    }

    pub fn usage(&self) -> ProcessNnUsage {
        let graphs =
            self.graphs.lock().expect("ledger poisoned").values().filter(|g| g.strong_count() > 0).count();
        ProcessNnUsage {
            bytes: self.bytes.load(Ordering::SeqCst),
            handles: self.handles.load(Ordering::SeqCst),
            graphs,
        }
    }

    /// Charges `bytes` and `handles` for `what`, or refuses when either would go over the
    /// process's ceiling (then nothing is charged).
    pub fn hold(
        self: &Arc<Self>,
        bytes: u64,
        handles: u64,
        what: impl FnOnce() -> String,
    ) -> Result<Hold, ProcessNnLimitExceeded> {
        if let Err(held) = add_within(&self.bytes, bytes, self.limits.max_bytes) {
            return Err(ProcessNnLimitExceeded::Bytes { what: what(), held, limit: self.limits.max_bytes });
        }
        if let Err(held) = add_within(&self.handles, handles, self.limits.max_handles) {
            self.bytes.fetch_sub(bytes, Ordering::SeqCst);
            return Err(ProcessNnLimitExceeded::Handles {
                what: what(),
                held,
                limit: self.limits.max_handles,
            });
        }
        Ok(Hold { ledger: self.clone(), bytes, handles })
    }

    /// The charge of the graph `key` of `bytes`: the one instances holding it share already,
    /// or a new one.
    pub fn hold_graph(
        self: &Arc<Self>,
        key: [u8; 32],
        bytes: u64,
        name: &str,
    ) -> Result<Arc<GraphHold>, ProcessNnLimitExceeded> {
        let mut graphs = self.graphs.lock().expect("ledger poisoned");
        if let Some(shared) = graphs.get(&key).and_then(Weak::upgrade) {
            return Ok(shared);
        }
        let hold = self.hold(bytes, 0, || format!("graph `{name}` ({} MiB)", bytes >> 20))?;
        let charge = Arc::new(GraphHold { key, _hold: hold });
        graphs.insert(key, Arc::downgrade(&charge));
        Ok(charge)
    }
}

/// Adds `amount` to `counter` unless that would pass `limit`; Err gives what it would be.
fn add_within(counter: &AtomicU64, amount: u64, limit: u64) -> Result<(), u64> {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
            now.checked_add(amount).filter(|&after| after <= limit)
        })
        .map(drop)
        .map_err(|now| now.saturating_add(amount))
}

/// A charge on the process's account, given back when dropped.
pub struct Hold {
    ledger: Arc<NnLedger>,
    bytes: u64,
    handles: u64,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hold {{ bytes: {}, handles: {} }}", self.bytes, self.handles)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.ledger.bytes.fetch_sub(self.bytes, Ordering::SeqCst);
        self.ledger.handles.fetch_sub(self.handles, Ordering::SeqCst);
    }
}

/// The charge of one graph, shared by every instance (and context) holding it.
#[derive(Debug)]
pub struct GraphHold {
    key: [u8; 32],
    _hold: Hold,
}

impl Drop for GraphHold {
    fn drop(&mut self) {
        let mut graphs = self._hold.ledger.graphs.lock().expect("ledger poisoned");
        // Another instance may have charged the graph anew since this charge's last holder let go.
        if graphs.get(&self.key).is_some_and(|g| g.strong_count() == 0) {
            graphs.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_over_the_ceiling_and_given_back_when_dropped() {
        let ledger = NnLedger::new(ProcessNnLimits { max_bytes: 100, max_handles: 3 });
        let a = ledger.hold(60, 1, || "a".into()).unwrap();
        let refused = ledger.hold(50, 1, || "a tensor of 50 bytes".into()).unwrap_err();
        assert!(refused.to_string().contains("a tensor of 50 bytes"), "{refused}");
        assert_eq!(
            ledger.usage(),
            ProcessNnUsage { bytes: 60, handles: 1, graphs: 0 },
            "a refusal charges nothing"
        );
        let graph = ledger.hold_graph([1; 32], 30, "g").unwrap();
        let same = ledger.hold_graph([1; 32], 30, "g").unwrap();
        assert_eq!(
            ledger.usage(),
            ProcessNnUsage { bytes: 90, handles: 1, graphs: 1 },
            "a shared graph is charged once"
        );
        let _b = ledger.hold(0, 2, || "b".into()).unwrap();
        assert!(matches!(
            ledger.hold(0, 1, String::new),
            Err(ProcessNnLimitExceeded::Handles { held: 4, .. })
        ));
        drop((a, graph));
        assert_eq!(ledger.usage().bytes, 30, "the graph stays charged while one holder keeps it");
        drop(same);
        assert_eq!(ledger.usage(), ProcessNnUsage { bytes: 0, handles: 2, graphs: 0 });
    }
}
