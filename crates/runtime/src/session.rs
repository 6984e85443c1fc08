//! One live guest instance and the discipline of calling it: limits armed before every call,
//! failures classified, and a failed instance thrown away so the next call starts fresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::InstancePre;
use wasmtime::{Store, Trap};

use super::error::{GuestError, GuestFailure};
use super::sandbox::GuestState;
use super::{GuestComponent, GuestRuntime, LoadError, World};

/// The typed bindings of one world.
pub trait WorldBindings: Sized {
    type Pre;
    /// The world's name in the WIT package.
    const WORLD: &'static str;
    /// What a component must export to run in this world.
    const KIND: World;
    /// What the world's `info` export answers.
    type Info;
    fn pre(pre: InstancePre<GuestState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<GuestState>) -> wasmtime::Result<Self>;
    fn call_info(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Self::Info>;
}

/// Implements [`WorldBindings`] for the bindings `wit_bindgen` generated for one world.
macro_rules! world_bindings {
    ($bindings:ty, $pre:ident, $info:ty, $world:literal, $kind:expr) => {
        impl $crate::session::WorldBindings for $bindings {
            type Pre = $pre<$crate::sandbox::GuestState>;
            const WORLD: &'static str = $world;
            const KIND: $crate::World = $kind;
            type Info = $info;

            fn pre(
                pre: wasmtime::component::InstancePre<$crate::sandbox::GuestState>,
            ) -> wasmtime::Result<Self::Pre> {
                $pre::new(pre)
            }

            fn instantiate(
                pre: &Self::Pre,
                store: &mut wasmtime::Store<$crate::sandbox::GuestState>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate(store)
            }

            fn call_info(
                &self,
                store: &mut wasmtime::Store<$crate::sandbox::GuestState>,
            ) -> wasmtime::Result<Self::Info> {
                <$bindings>::call_info(self, store)
            }
        }
    };
}
pub(crate) use world_bindings;

/// Everything needed to make a fresh store for a guest, detached from `GuestRuntime`.
#[derive(Clone)]
struct StoreFactory {
    engine: wasmtime::Engine,
    nn: Arc<super::NnHost>,
    limits: super::GuestLimits,
}

/// Timing of the last call, for benchmarks and summaries.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallStats {
    pub wall: Duration,
    /// Part of `wall` spent in the host computing the guest's graphs.
    pub nn_compute: Duration,
    /// The instance's linear memory at the end of the call (or when it failed): the most it
    /// has held, since a WebAssembly memory never shrinks.
    pub memory_bytes: usize,
}

pub(crate) struct Session<B: WorldBindings> {
    /// The declared name once known; the file name before.
    pub name: String,
    pub component: Arc<GuestComponent>,
    pre: B::Pre,
    factory: StoreFactory,
    instance: Option<(Store<GuestState>, B)>,
    pub last_call: CallStats,
}

impl<B: WorldBindings> Session<B> {
    /// A session of `component`, which must implement this world.
    pub fn new(runtime: &GuestRuntime, component: Arc<GuestComponent>) -> Result<Self, LoadError> {
        if component.world != B::KIND {
            return Err(LoadError::WrongWorld {
                path: component.path.clone(),
                found: component.world.describe(),
                expected: B::KIND.describe(),
            });
        }
        let pre = B::pre(component.pre.clone()).map_err(|e| LoadError::Signature {
            path: component.path.clone(),
            world: B::WORLD,
            reason: format!("{e:#}"),
        })?;
        Ok(Session {
            name: component.file_name(),
            factory: StoreFactory {
                engine: runtime.engine.clone(),
                nn: runtime.nn.clone(),
                limits: runtime.limits,
            },
            component,
            pre,
            instance: None,
            last_call: CallStats::default(),
        })
    }

    pub fn nn_usage(&self) -> Option<super::wasi_nn::NnUsage> {
        self.instance.as_ref().map(|(store, _)| store.data().nn.usage())
    }

    /// Calls into the guest through `f`, instantiating it first when needed, within the
    /// per-call time limit.
    pub fn call<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&B, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestError> {
        self.call_within(call, self.factory.limits.call_timeout, f)
    }

    /// [`call`](Self::call) within `timeout` (at most the per-call limit).
    pub fn call_within<R>(
        &mut self,
        call: &'static str,
        timeout: Duration,
        f: impl FnOnce(&B, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestError> {
        let started = Instant::now();
        self.last_call = CallStats::default();
        let timeout = timeout.min(self.factory.limits.call_timeout);
        let result = self.call_inner(timeout, f);
        if let Some((store, _)) = &self.instance {
            self.last_call.nn_compute = store.data().nn.compute_time;
            self.last_call.memory_bytes = store.data().limiter.peak_bytes;
        }
        self.last_call.wall = started.elapsed();
        result.map_err(|failure| GuestError {
            guest: self.name.clone(),
            file: self.component.path.display().to_string(),
            call,
            failure,
        })
    }

    fn call_inner<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&B, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, GuestFailure> {
        let deadline = Instant::now() + timeout;
        if self.instance.is_none() {
            let mut store = self.fresh_store();
            self.arm(&mut store, deadline);
            match B::instantiate(&self.pre, &mut store) {
                Ok(bindings) => self.instance = Some((store, bindings)),
                Err(e) => {
                    self.last_call.memory_bytes = store.data().limiter.peak_bytes;
                    return Err(classify(&e, &store, &self.factory.limits, timeout, true));
                }
            }
        }
        let (mut store, bindings) = self.instance.take().expect("instantiated above");
        // Instantiation counts against the same call's time.
        self.arm(&mut store, deadline);
        match f(&bindings, &mut store) {
            Ok(r) => {
                self.instance = Some((store, bindings));
                Ok(r)
            }
            // The instance is dropped here: after a trap its state is unknown.
            Err(e) => {
                let failure = classify(&e, &store, &self.factory.limits, timeout, false);
                self.last_call.nn_compute = store.data().nn.compute_time;
                self.last_call.memory_bytes = store.data().limiter.peak_bytes;
                Err(failure)
            }
        }
    }

    fn fresh_store(&self) -> Store<GuestState> {
        let mut store =
            Store::new(&self.factory.engine, GuestState::new(self.factory.nn.clone(), &self.factory.limits));
        store.limiter(|state| &mut state.limiter);
        store
    }

    /// Sets the call's limits: `deadline` for the guest's code and its graphs.
    fn arm(&self, store: &mut Store<GuestState>, deadline: Instant) {
        store.set_epoch_deadline(super::deadline_ticks(deadline.saturating_duration_since(Instant::now())));
        if let Some(fuel) = self.factory.limits.fuel {
            store.set_fuel(fuel).expect("fuel is enabled in the engine when a budget is set");
        }
        let state = store.data_mut();
        state.log.clear();
        state.limiter.refused_bytes = None;
        state.nn.compute_time = Duration::ZERO;
        state.nn.call_flops = 0;
        state.nn.deadline = refacen_nn::Deadline::at(deadline);
    }
}

fn classify(
    e: &wasmtime::Error,
    store: &Store<GuestState>,
    limits: &super::GuestLimits,
    timeout: Duration,
    instantiating: bool,
) -> GuestFailure {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return GuestFailure::Timeout(timeout),
        Some(Trap::OutOfFuel) => return GuestFailure::OutOfFuel(limits.fuel.unwrap_or(0)),
        _ => {}
    }
    if e.downcast_ref::<super::wasi_nn::CallDeadlineExceeded>().is_some() {
        return GuestFailure::Timeout(timeout);
    }
    if let Some(exceeded) = e.downcast_ref::<super::wasi_nn::NnCostExceeded>() {
        return GuestFailure::NnCost(exceeded.clone());
    }
    if let Some(exceeded) = e.downcast_ref::<super::ProcessNnLimitExceeded>() {
        return GuestFailure::NnProcess(exceeded.clone());
    }
    let state = store.data();
    if let Some(requested_bytes) = state.limiter.refused_bytes {
        return GuestFailure::MemoryLimit { requested_bytes, limit_bytes: limits.memory_bytes };
    }
    // wasmtime's Display shows only the outermost context; the cause is further down.
    let reason =
        e.chain().map(|c| c.to_string()).filter(|s| !s.contains("wasm backtrace")).collect::<Vec<_>>();
    let reason = if reason.is_empty() { e.to_string() } else { reason.join(": ") };
    if instantiating {
        return GuestFailure::Instantiate(reason);
    }
    // wasmtime reports this bound only in text (component/func/options.rs).
    if reason.contains("fuel allocated for hostcalls has been exhausted") {
        return GuestFailure::HostcallDataLimit { limit_bytes: store.hostcall_fuel() };
    }
    let log = state.log.tail();
    match panic_message(&log) {
        Some(message) => GuestFailure::Panic { message },
        None => GuestFailure::Trap { reason, log },
    }
}

/// The message of a Rust panic in a guest's captured output: "panicked at FILE:LINE:COL:"
/// followed by the message, then usually a "note: run with `RUST_BACKTRACE=1`" line.
fn panic_message(log: &str) -> Option<String> {
    let start = log.rfind("panicked at ")?;
    let text = &log[start + "panicked at ".len()..];
    let (location, rest) = text.split_once(":\n").unwrap_or((text, ""));
    let message: Vec<&str> = rest.lines().take_while(|l| !l.starts_with("note: ")).collect();
    Some(format!("{} (at {location})", message.join(" ").trim()))
}
