//! The host side of `wasi:nn`: guests hand over ONNX graphs and tensors, the host runs them
//! on its backend. Graphs are prepared once per distinct model (keyed by the sha256 of its
//! bytes) and shared by every instance of every guest, so a guest re-instantiated after a
//! trap does not pay for loading its weights again.

mod area;
mod host;

pub use host::{HasNnView, NnView, add_to_linker};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::StoreContextMut;
use wasmtime::component::{HasData, Resource, ResourceTable, WasmList};

use super::nn_ledger::{GraphHold, Hold, NnLedger, ProcessNnLimits, ProcessNnUsage};
use refacen_nn as nn;
use refacen_nn::{Backend, Deadline, Executable, Graph, NnError, Tensor};

/// The interface whose tensor constructor `host::add_tensor_constructor` defines.
const TENSOR_INTERFACE: &str = "wasi:nn/tensor@0.2.0-rc-2024-10-28";

pub(crate) mod generated {
    wasmtime::component::bindgen!({
        world: "wasi:nn/ml",
        path: "../../wit",
        with: {
            "wasi:nn/graph.graph": super::GraphResource,
            "wasi:nn/tensor.tensor": super::TensorResource,
            "wasi:nn/inference.graph-execution-context": super::ContextResource,
            "wasi:nn/errors.error": super::ErrorResource,
        },
        imports: { default: trappable },
        trappable_error_type: {
            "wasi:nn/errors.error" => super::ErrorResource,
        },
    });
}

use generated::wasi::nn::errors::ErrorCode;
use generated::wasi::nn::graph::{ExecutionTarget, GraphEncoding};
use generated::wasi::nn::tensor::TensorType;
use generated::wasi::nn::{errors, graph, inference, tensor};

/// Limits on what one guest instance may ask of the neural-network host.
#[derive(Clone, Copy, Debug)]
pub struct NnLimits {
    /// Largest ONNX graph a guest may load, in bytes.
    pub max_graph_bytes: usize,
    /// Most tensor data a guest may keep alive in the host at once, in bytes.
    pub max_live_tensor_bytes: usize,
    /// Most work all of one guest call's computes may take together, in flops (estimated from
    /// the shapes before each compute runs).
    pub max_flops_per_call: u64,
    /// Most memory one compute's values may hold at once, in bytes (estimated likewise).
    pub max_compute_bytes: u64,
    /// Most graphs one instance may hold at once, and their most bytes together.
    pub max_graphs_per_instance: usize,
    pub max_graph_bytes_per_instance: usize,
    /// Most wasi-nn handles (graphs, contexts, tensors, errors) one instance may hold at once.
    pub max_handles_per_instance: usize,
    /// What all instances together may hold.
    pub process: ProcessNnLimits,
    /// Most bytes of ONNX graphs the process keeps prepared for instances to come; the oldest
    /// are let go beyond it (instances holding one keep it alive), so guests loading ever new
    /// graphs cannot grow the host without bound.
    pub max_prepared_graph_bytes: usize,
}

impl Default for NnLimits {
    fn default() -> Self {
        // The shipped guests need at most ~50 GFLOP and a few hundred MiB per call at their
        // defaults (facenet-512 at batch 16); these pass them with a wide margin.
        NnLimits {
            max_graph_bytes: 512 << 20,
            max_live_tensor_bytes: 2 << 30,
            max_flops_per_call: 4_000_000_000_000,
            max_compute_bytes: 8 << 30,
            // The shipped guests hold 1 to 3 graphs (facenet-512's is 94 MB) and a handful of
            // handles between calls.
            max_graphs_per_instance: 16,
            max_graph_bytes_per_instance: 1 << 30,
            max_handles_per_instance: 4096,
            process: ProcessNnLimits::for_this_machine(),
            max_prepared_graph_bytes: 2 << 30,
        }
    }
}

/// A compute refused before it ran: its estimated work or memory is over the ceiling.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NnCostExceeded {
    #[error(
        "graph `{graph}` needs {:.1} GFLOP for these inputs, which brings this call to {:.1} GFLOP, \
         over the limit of {:.1} GFLOP per call (--guest-nn-gflop-per-call)",
        *.flops as f64 / 1e9, *.call_flops as f64 / 1e9, *.limit as f64 / 1e9
    )]
    Work { graph: String, flops: u64, call_flops: u64, limit: u64 },
    #[error(
        "graph `{graph}` needs {} MiB of memory for these inputs, over the limit of {} MiB per compute \
         (--guest-nn-memory-mb)",
        .bytes >> 20, .limit >> 20
    )]
    Memory { graph: String, bytes: u64, limit: u64 },
}

/// Graphs prepared once per distinct model, oldest first.
#[derive(Default)]
struct PreparedGraphs {
    by_digest: HashMap<[u8; 32], GraphResource>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

impl PreparedGraphs {
    fn insert(&mut self, key: [u8; 32], graph: GraphResource, max_bytes: usize) {
        self.bytes += graph.bytes;
        if let Some(old) = self.by_digest.insert(key, graph) {
            self.bytes -= old.bytes;
        } else {
            self.order.push_back(key);
        }
        while self.bytes > max_bytes && self.order.len() > 1 {
            let oldest = self.order.pop_front().expect("more than one");
            if let Some(old) = self.by_digest.remove(&oldest) {
                self.bytes -= old.bytes;
            }
        }
    }
}

/// The neural-network service shared by all guest instances of a runtime.
pub struct NnHost {
    backend: Arc<dyn Backend>,
    limits: NnLimits,
    prepared: Mutex<PreparedGraphs>,
    ledger: Arc<NnLedger>,
}

impl NnHost {
    pub fn new(backend: Arc<dyn Backend>, limits: NnLimits) -> Self {
        let ledger = NnLedger::new(limits.process);
        NnHost { backend, limits, prepared: Mutex::new(PreparedGraphs::default()), ledger }
    }

    /// What all instances hold now (zero once every instance is gone).
    pub fn process_usage(&self) -> ProcessNnUsage {
        self.ledger.usage()
    }

    /// The graphs kept prepared for instances to come, and their ONNX bytes.
    pub fn prepared_graphs(&self) -> (usize, usize) {
        let prepared = self.prepared.lock().expect("graph cache poisoned");
        (prepared.by_digest.len(), prepared.bytes)
    }

    pub fn backend_name(&self) -> &str {
        self.backend.name()
    }

    pub fn backend_offloads(&self) -> bool {
        self.backend.offloads()
    }

    /// Every graph guests have loaded so far (benchmarks time them layer by layer).
    pub fn loaded_graphs(&self) -> Vec<Arc<Graph>> {
        let prepared = self.prepared.lock().expect("graph cache poisoned");
        prepared.by_digest.values().map(|g| g.graph.clone()).collect()
    }

    fn load(&self, bytes: &[u8]) -> Result<GraphResource, NnError> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(graph) = self.prepared.lock().expect("graph cache poisoned").by_digest.get(&key) {
            return Ok(graph.clone());
        }
        // Prepared outside the lock: instances loading different graphs do not wait on each
        // other; two racing on the same graph both prepare it and one result wins.
        let graph = Arc::new(nn::load_onnx(bytes)?);
        let executable = self.backend.prepare(graph.clone())?;
        let resource = GraphResource { graph, executable, bytes: bytes.len(), key, charge: None };
        let max = self.limits.max_prepared_graph_bytes;
        self.prepared.lock().expect("graph cache poisoned").insert(key, resource.clone(), max);
        Ok(resource)
    }
}

/// What one guest instance holds in the host through wasi-nn: every resource it owns, and
/// the bytes of its tensors. A well-behaved guest returns to the same usage after every call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NnUsage {
    pub graphs: usize,
    /// Bytes of the ONNX graphs the instance holds (each graph counted once per handle).
    pub graph_bytes: usize,
    pub contexts: usize,
    pub tensors: usize,
    pub tensor_bytes: usize,
    pub errors: usize,
}

/// Per-instance wasi-nn state.
pub struct NnState {
    host: Arc<NnHost>,
    usage: NnUsage,
    /// Time spent computing graphs during the current guest call.
    pub compute_time: Duration,
    /// The current guest call's deadline, which holds inside the work the host does for it.
    pub deadline: Deadline,
    /// Work the current guest call's computes have taken so far (estimated), in flops.
    pub call_flops: u64,
    /// The memory of the last summed-area table the guest dropped, for its next.
    area_table: Vec<u32>,
}

/// The host's work for a guest call ran past the call's deadline: the call fails as a
/// timeout, exactly as if the guest's own code had run too long.
#[derive(Debug, thiserror::Error)]
#[error("the host's neural-network work for this call ran past the call's time limit")]
pub struct CallDeadlineExceeded;

impl NnState {
    pub fn new(host: Arc<NnHost>) -> Self {
        NnState {
            host,
            usage: NnUsage::default(),
            compute_time: Duration::ZERO,
            deadline: Deadline::NONE,
            call_flops: 0,
            area_table: Vec::new(),
        }
    }

    pub fn usage(&self) -> NnUsage {
        self.usage
    }
}

impl NnUsage {
    fn handles(&self) -> usize {
        self.graphs + self.contexts + self.tensors + self.errors
    }
}

#[derive(Clone)]
pub struct GraphResource {
    graph: Arc<Graph>,
    executable: Arc<dyn Executable>,
    /// Size of the ONNX bytes it was loaded from: what holding it is charged.
    bytes: usize,
    /// The sha256 of those bytes.
    key: [u8; 32],
    /// Its charge on the process's account, shared by every instance holding it (none for
    /// the cache's own copy).
    charge: Option<Arc<GraphHold>>,
}

pub struct ContextResource {
    graph: GraphResource,
    _hold: Hold,
}

pub struct TensorResource {
    dimensions: Vec<u32>,
    ty: TensorType,
    data: TensorData,
    /// Its charge on the process's account while an instance holds it.
    hold: Option<Hold>,
}

/// A tensor's data as the host holds it: the bytes a guest handed over, or FP32 values (a
/// guest's FP32 input, made so once for the compute; a compute's output as the backend
/// returned it), lowered into the guest's memory straight from the values when it reads them
/// ([`TensorData::le_bytes`]). Shared, so that a `data` call lends them to the lowering.
enum TensorData {
    Bytes(Vec<u8>),
    Fp32(Arc<Vec<f32>>),
}

/// FP32 values seen as their little-endian bytes, for `bytes::Bytes` to lend out.
struct LeBytes(Arc<Vec<f32>>);

impl AsRef<[u8]> for LeBytes {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(self.0.as_slice())
    }
}

/// Little-endian FP32 `bytes` (a multiple of 4 long) as values, copied once into memory that
/// is not written first: zeroed memory (`calloc`) is zeroed again by the allocator when it
/// reuses freed memory, which it does for a detector's inputs from one call to the next
/// (a `memset` of every input: perf put it at ~0.7 ms per detection of biden.jpg). The
/// memory is a buffer an earlier compute on this thread left where one has room (a larger
/// pyramid level, an output the guest dropped), already mapped.
fn fp32_values(bytes: &[u8]) -> Result<Vec<f32>, NnError> {
    let n = bytes.len() / 4;
    let mut values = nn::take_spare_values(n).unwrap_or_default();
    values
        .try_reserve_exact(n)
        .map_err(|_| NnError::too_large(nn::Excess::Allocation { bytes: bytes.len() as u64 }))?;
    // SAFETY: the (empty) vector's capacity is at least `n` values, `n * 4` bytes, which the
    // copy fills from `bytes` (as long, and not overlapping memory this vector owns) before
    // the length covers them;
    // every bit pattern is a valid f32, and on this little-endian target the bytes are the
    // values' own.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), values.as_mut_ptr().cast::<u8>(), n * 4);
        values.set_len(n);
    }
    Ok(values)
}

impl TensorData {
    /// A guest's tensor bytes, as FP32 values when they are (the form a compute takes, so that
    /// it takes them without another copy), else as they came, for `compute` to refuse with
    /// the reason.
    fn from_guest(ty: TensorType, bytes: &[u8]) -> Result<TensorData, NnError> {
        if !matches!(ty, TensorType::Fp32) || !bytes.len().is_multiple_of(4) || cfg!(target_endian = "big") {
            return Ok(TensorData::Bytes(bytes.to_vec()));
        }
        Ok(TensorData::Fp32(Arc::new(fp32_values(bytes)?)))
    }

    fn byte_len(&self) -> usize {
        match self {
            TensorData::Bytes(bytes) => bytes.len(),
            TensorData::Fp32(values) => std::mem::size_of_val(values.as_slice()),
        }
    }

    /// The data as wasi-nn hands it to guests, little-endian bytes: on a little-endian host,
    /// FP32 values are lent as they are, and lowering into the guest's memory is their only
    /// copy.
    fn le_bytes(&self) -> bytes::Bytes {
        match self {
            TensorData::Bytes(bytes) => bytes::Bytes::copy_from_slice(bytes),
            TensorData::Fp32(values) if cfg!(target_endian = "little") => {
                bytes::Bytes::from_owner(LeBytes(values.clone()))
            }
            TensorData::Fp32(values) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Lets go of the data. FP32 values that nothing else holds are left to the computes on
    /// this thread (the next input a guest hands over, the next compute's outputs) instead of
    /// freed: glibc unmaps a large buffer it frees, and the next one is faulted in anew
    /// (perf: ~0.8 ms per detection of biden.jpg, whose pyramid's outputs are 5 MB).
    fn release(self) {
        if let TensorData::Fp32(values) = self
            && let Ok(values) = Arc::try_unwrap(values)
        {
            nn::keep_spare_values(values);
        }
    }

    /// The FP32 values, moved out where nothing else holds them (a `data` call's loan ends
    /// with the call).
    fn into_values(values: Arc<Vec<f32>>) -> Vec<f32> {
        Arc::try_unwrap(values).unwrap_or_else(|shared| shared.as_ref().clone())
    }
}

#[derive(Debug)]
pub struct ErrorResource {
    code: ErrorCode,
    message: String,
}

impl ErrorResource {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorResource { code, message: message.into() }
    }
}

impl From<NnError> for ErrorResource {
    fn from(e: NnError) -> Self {
        let code = match e {
            NnError::InvalidEncoding(_) | NnError::InvalidGraph { .. } => ErrorCode::InvalidEncoding,
            NnError::UnsupportedOp { .. } => ErrorCode::UnsupportedOperation,
            NnError::InvalidArgument { .. } | NnError::InputCount { .. } | NnError::InputShape { .. } => {
                ErrorCode::InvalidArgument
            }
            NnError::TooLarge { .. } | NnError::TensorLimit { .. } => ErrorCode::TooLarge,
            NnError::Runtime { .. } | NnError::DeadlineExceeded | NnError::Node { .. } => {
                ErrorCode::RuntimeError
            }
        };
        ErrorResource::new(code, e.to_string())
    }
}

impl From<wasmtime::component::ResourceTableError> for ErrorResource {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        ErrorResource::new(ErrorCode::InvalidArgument, format!("bad wasi-nn handle: {e}"))
    }
}
