//! What a guest instance is given: wasi-nn, and WASI interfaces that lead nowhere.
//!
//! Guests built for `wasm32-wasip2` import the standard WASI interfaces because Rust's std
//! does. They are linked, but to a context with no preopened directories (no files), no
//! environment or arguments, network denied, a frozen clock and deterministic randomness
//! (so results are reproducible), stdin closed, and stdout/stderr captured into a small
//! buffer whose tail is attached to error reports (that is where a panic message goes).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::wasi_nn::{NnHost, NnState, NnView};

/// Resource limits for every guest call. All have CLI flags (see `cli::GuestArgs`).
#[derive(Clone, Copy, Debug)]
pub struct GuestLimits {
    /// Largest linear memory a guest instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock limit of one call into a guest, the host's neural-network work included.
    pub call_timeout: Duration,
    /// Deterministic instruction budget per call (wasmtime fuel); `None` = unmetered.
    pub fuel: Option<u64>,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits { memory_bytes: 1 << 30, call_timeout: Duration::from_secs(60), fuel: None }
    }
}

/// How many bytes of guest stdout/stderr are kept for error reports.
const LOG_TAIL_BYTES: usize = 8 * 1024;

/// The store data of one guest instance.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) nn: NnState,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log: GuestLog,
}

impl GuestState {
    pub fn new(nn: Arc<NnHost>, limits: &GuestLimits) -> Self {
        let log = GuestLog::default();
        let wasi = WasiCtx::builder()
            .stdout(log.clone())
            .stderr(log.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(wasmtime_wasi::Deterministic::new(vec![0x5a, 0x17, 0xc3, 0x88]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![0x2b, 0x91, 0x4e, 0xd6]))
            .insecure_random_seed(0x0123_4567_89ab_cdef)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        GuestState {
            wasi,
            table: ResourceTable::new(),
            nn: NnState::new(nn),
            limiter: MemoryLimiter { limit_bytes: limits.memory_bytes, refused_bytes: None, peak_bytes: 0 },
            log,
        }
    }

    pub(crate) fn nn_view(&mut self) -> NnView<'_> {
        NnView { state: &mut self.nn, table: &mut self.table }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps linear memory, and remembers a refused growth so the error can say so (wasmtime
/// reports it only as the guest's own abort).
pub struct MemoryLimiter {
    limit_bytes: usize,
    pub(crate) refused_bytes: Option<usize>,
    /// The largest linear memory the instance has grown to (memories never shrink).
    pub(crate) peak_bytes: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.refused_bytes = Some(desired);
            return Ok(false);
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The last `LOG_TAIL_BYTES` a guest wrote to stdout or stderr.
#[derive(Clone, Default)]
pub struct GuestLog(Arc<Mutex<VecDeque<u8>>>);

impl GuestLog {
    pub fn clear(&self) {
        self.0.lock().expect("guest log poisoned").clear();
    }

    /// The captured text, trimmed.
    pub fn tail(&self) -> String {
        let bytes: Vec<u8> = self.0.lock().expect("guest log poisoned").iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 streams use this, and WASIp3 is not linked.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let mut buffer = self.0.lock().expect("guest log poisoned");
        buffer.extend(bytes.iter());
        let excess = buffer.len().saturating_sub(LOG_TAIL_BYTES);
        buffer.drain(..excess);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

/// A clock that always reads zero: guests get no wall-clock time.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}
