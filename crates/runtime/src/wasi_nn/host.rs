//! The wasi-nn interfaces (graph, inference, tensor, errors) as the host implements them for
//! one guest instance: every handle checked, every byte charged, every compute under the call's
//! deadline.

use super::*;

/// What the generated host traits are implemented on: the instance's wasi-nn state and its
/// resource table.
pub struct NnView<'a> {
    pub state: &'a mut NnState,
    pub table: &'a mut ResourceTable,
}

pub struct HasNnView;

impl HasData for HasNnView {
    type Data<'a> = NnView<'a>;
}

/// Adds the `wasi:nn` imports to `linker`.
pub fn add_to_linker<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    graph::add_to_linker::<_, HasNnView>(linker, view)?;
    tensor::add_to_linker::<_, HasNnView>(linker, view)?;
    inference::add_to_linker::<_, HasNnView>(linker, view)?;
    errors::add_to_linker::<_, HasNnView>(linker, view)?;
    add_tensor_constructor(linker, view)?;
    add_tensor_data(linker, view)?;
    super::area::add_to_linker(linker, view)
}

/// The tensor constructor again, over the generated one: that one lifts the guest's bytes into
/// a host `Vec<u8>` before the host sees them, and the host then copied them into FP32 values
/// for the compute, two copies of every input (each level of a detector's image pyramid). This
/// one reads the bytes where they lie in the guest's memory and copies them once, straight into
/// the values the compute takes, after checking that the guest has room for them.
fn add_tensor_constructor<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    type Params = (Vec<u32>, TensorType, WasmList<u8>);
    linker.allow_shadowing(true);
    let defined = linker.instance(TENSOR_INTERFACE)?.func_wrap(
        "[constructor]tensor",
        move |mut store: StoreContextMut<'_, T>, (dimensions, ty, data): Params| {
            let room = view(store.data_mut()).tensor_room();
            if data.len() > room {
                return Err(view(store.data_mut()).too_many_tensor_bytes(data.len()));
            }
            let data = TensorData::from_guest(ty, data.as_le_slice(&store))?;
            let tensor =
                view(store.data_mut()).push_tensor(TensorResource { dimensions, ty, data, hold: None })?;
            Ok((tensor,))
        },
    );
    linker.allow_shadowing(false);
    defined
}

/// The tensor's `data` method again, over the generated one: that one returns a host
/// `Vec<u8>`, which the host made by copying the compute's FP32 output before wasmtime copied
/// it again into the guest's memory (a detector's outputs are MBs per photo). This one lends
/// the values to the lowering, the only copy.
fn add_tensor_data<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = linker.instance(TENSOR_INTERFACE)?.func_wrap(
        "[method]tensor.data",
        move |mut store: StoreContextMut<'_, T>, (tensor,): (Resource<TensorResource>,)| {
            Ok((view(store.data_mut()).table.get(&tensor)?.data.le_bytes(),))
        },
    );
    linker.allow_shadowing(false);
    defined
}

type NnResult<T> = wasmtime::Result<Result<T, Resource<ErrorResource>>>;

impl NnView<'_> {
    /// Traps when the instance already holds as many handles as it may: a guest that never
    /// drops what it gets cannot grow the host's tables without bound.
    pub(super) fn check_handles(&self) -> wasmtime::Result<()> {
        let (held, limit) = (self.state.usage.handles(), self.state.host.limits.max_handles_per_instance);
        if held >= limit {
            wasmtime::bail!(
                "the guest holds {held} wasi-nn handles (graphs, contexts, tensors, errors) in the host, \
                 the most one instance may: it does not drop what it no longer uses"
            );
        }
        Ok(())
    }

    /// Returns `error` to the guest as a wasi-nn error resource.
    fn fail<T>(&mut self, error: impl Into<ErrorResource>) -> NnResult<T> {
        self.check_handles()?;
        let error = self.table.push(error.into())?;
        self.state.usage.errors += 1;
        Ok(Err(error))
    }

    /// Bytes of tensor data the guest may still hand over before it holds its limit.
    pub(super) fn tensor_room(&self) -> usize {
        self.state.host.limits.max_live_tensor_bytes.saturating_sub(self.state.usage.tensor_bytes)
    }

    pub(super) fn too_many_tensor_bytes(&self, more: usize) -> wasmtime::Error {
        let live = self.state.usage.tensor_bytes.saturating_add(more);
        let limit = self.state.host.limits.max_live_tensor_bytes;
        wasmtime::format_err!(
            "the guest keeps {live} bytes of tensors alive in the host, over the limit of {limit} bytes"
        )
    }

    /// Hands `tensor` to the guest, charged to it: a guest that keeps every tensor (its own
    /// or a compute's outputs) alive traps at the limit instead of growing the host.
    pub(super) fn push_tensor(
        &mut self,
        mut tensor: TensorResource,
    ) -> wasmtime::Result<Resource<TensorResource>> {
        self.check_handles()?;
        if tensor.data.byte_len() > self.tensor_room() {
            return Err(self.too_many_tensor_bytes(tensor.data.byte_len()));
        }
        let live = self.state.usage.tensor_bytes + tensor.data.byte_len();
        let bytes = tensor.data.byte_len();
        tensor.hold =
            Some(self.process_hold(bytes as u64, 1, || format!("a tensor of {} MiB", bytes >> 20))?);
        let handle = self.table.push(tensor)?;
        self.state.usage.tensors += 1;
        self.state.usage.tensor_bytes = live;
        Ok(handle)
    }

    /// Charges the process's account, or fails the call when all instances together would
    /// hold more than the process may.
    pub(super) fn process_hold(
        &self,
        bytes: u64,
        handles: u64,
        what: impl FnOnce() -> String,
    ) -> wasmtime::Result<Hold> {
        Ok(self.state.host.ledger.hold(bytes, handles, what)?)
    }

    fn delete_tensor(&mut self, tensor: Resource<TensorResource>) -> wasmtime::Result<TensorResource> {
        let tensor = self.table.delete(tensor)?;
        self.state.usage.tensors -= 1;
        self.state.usage.tensor_bytes -= tensor.data.byte_len();
        Ok(tensor)
    }
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        builders: Vec<Vec<u8>>,
        encoding: GraphEncoding,
        _target: ExecutionTarget,
    ) -> NnResult<Resource<GraphResource>> {
        // The execution target is the host's choice (--device), not the guest's.
        if !matches!(encoding, GraphEncoding::Onnx) {
            return self.fail(ErrorResource::new(
                ErrorCode::InvalidEncoding,
                format!("graph encoding {encoding:?} is not supported; refacen runs ONNX graphs"),
            ));
        }
        let [bytes] = builders.as_slice() else {
            return self.fail(ErrorResource::new(
                ErrorCode::InvalidArgument,
                format!("an ONNX graph is one builder buffer, got {}", builders.len()),
            ));
        };
        let max = self.state.host.limits.max_graph_bytes;
        if bytes.len() > max {
            return self.fail(ErrorResource::new(
                ErrorCode::TooLarge,
                format!("graph of {} bytes exceeds the limit of {max} bytes", bytes.len()),
            ));
        }
        let (usage, limits) = (self.state.usage, self.state.host.limits);
        if usage.graphs >= limits.max_graphs_per_instance
            || usage.graph_bytes + bytes.len() > limits.max_graph_bytes_per_instance
        {
            return self.fail(ErrorResource::new(
                ErrorCode::TooLarge,
                format!(
                    "this instance holds {} graphs of {} MiB already; one may hold at most {} graphs of \
                     {} MiB together: drop graphs it no longer uses",
                    usage.graphs,
                    usage.graph_bytes >> 20,
                    limits.max_graphs_per_instance,
                    limits.max_graph_bytes_per_instance >> 20
                ),
            ));
        }
        self.check_handles()?;
        let loaded = self.state.host.load(bytes);
        // Importing and preparing a graph is work on the guest's behalf too.
        if self.state.deadline.expired() {
            return Err(CallDeadlineExceeded.into());
        }
        match loaded {
            Ok(mut graph) => {
                let graph_bytes = graph.bytes;
                graph.charge = Some(self.state.host.ledger.hold_graph(
                    graph.key,
                    graph_bytes as u64,
                    &graph.graph.name,
                )?);
                let graph = self.table.push(graph)?;
                self.state.usage.graphs += 1;
                self.state.usage.graph_bytes += graph_bytes;
                Ok(Ok(graph))
            }
            Err(e) => self.fail(e),
        }
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<GraphResource>> {
        self.fail(ErrorResource::new(
            ErrorCode::NotFound,
            format!("no graph named `{name}`: refacen guests embed their graphs and load them with `load`"),
        ))
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(
        &mut self,
        graph: Resource<GraphResource>,
    ) -> NnResult<Resource<ContextResource>> {
        self.check_handles()?;
        let graph = self.table.get(&graph)?.clone();
        let name = &graph.graph.name;
        let hold = self.process_hold(0, 1, || format!("an execution context of graph `{name}`"))?;
        let context = self.table.push(ContextResource { graph, _hold: hold })?;
        self.state.usage.contexts += 1;
        Ok(Ok(context))
    }

    fn drop(&mut self, graph: Resource<GraphResource>) -> wasmtime::Result<()> {
        let graph = self.table.delete(graph)?;
        self.state.usage.graphs -= 1;
        self.state.usage.graph_bytes -= graph.bytes;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    fn compute(
        &mut self,
        context: Resource<ContextResource>,
        inputs: Vec<(String, Resource<TensorResource>)>,
    ) -> NnResult<Vec<(String, Resource<TensorResource>)>> {
        // The inputs are owned: the guest handed them over and can no longer drop them, so
        // they leave the table (and the guest's account) now, whatever happens next.
        let mut handed_over = Vec::with_capacity(inputs.len());
        for (name, handle) in inputs {
            handed_over.push((name, self.delete_tensor(handle)?));
        }
        let graph = self.table.get(&context)?.graph.clone();
        let mut by_name: HashMap<String, Tensor> = HashMap::new();
        for (name, t) in handed_over {
            match to_tensor(t) {
                Ok(tensor) => {
                    by_name.insert(name, tensor);
                }
                Err(problem) => {
                    let fault = nn::ArgumentFault::Input { input: name.clone(), problem };
                    return self.fail(NnError::invalid_argument(fault));
                }
            }
        }
        let mut ordered = Vec::with_capacity(graph.graph.inputs.len());
        for name in graph.graph.input_names() {
            match by_name.remove(name) {
                Some(t) => ordered.push(t),
                None => {
                    let expected: Vec<&str> = graph.graph.input_names().collect();
                    return self.fail(NnError::invalid_argument(nn::ArgumentFault::MissingGraphInput {
                        graph: graph.graph.name.clone(),
                        input: name.to_string(),
                        inputs: expected.iter().map(|s| s.to_string()).collect(),
                    }));
                }
            }
        }
        if let Some(extra) = by_name.keys().next() {
            let fault = nn::ArgumentFault::UnknownGraphInput { input: extra.clone() };
            return self.fail(NnError::invalid_argument(fault));
        }
        if let Err(e) = graph.graph.check_inputs(&ordered) {
            return self.fail(e);
        }
        let shapes: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape().to_vec()).collect();
        let cost = match graph.graph.cost(&shapes) {
            Ok(cost) => cost,
            Err(e) => return self.fail(e),
        };
        let limits = &self.state.host.limits;
        let call_flops = self.state.call_flops.saturating_add(cost.flops);
        if call_flops > limits.max_flops_per_call {
            let (graph, limit) = (graph.graph.name.clone(), limits.max_flops_per_call);
            return Err(NnCostExceeded::Work { graph, flops: cost.flops, call_flops, limit }.into());
        }
        if cost.peak_bytes > limits.max_compute_bytes {
            let (graph, limit) = (graph.graph.name.clone(), limits.max_compute_bytes);
            return Err(NnCostExceeded::Memory { graph, bytes: cost.peak_bytes, limit }.into());
        }
        self.state.call_flops = call_flops;
        let name = &graph.graph.name;
        let running = self.process_hold(cost.peak_bytes, 0, || {
            format!("computing graph `{name}` ({} MiB for these inputs)", cost.peak_bytes >> 20)
        })?;
        let started = Instant::now();
        let outputs = graph.executable.run_until(ordered, self.state.deadline);
        self.state.compute_time += started.elapsed();
        drop(running);
        let outputs = match outputs {
            Ok(o) => o,
            Err(NnError::DeadlineExceeded) => return Err(CallDeadlineExceeded.into()),
            Err(e) => return self.fail(e),
        };
        let mut named = Vec::with_capacity(outputs.len());
        for (name, tensor) in graph.graph.output_names().zip(outputs) {
            named.push((name.to_string(), self.push_tensor(from_tensor(tensor))?));
        }
        Ok(Ok(named))
    }

    fn drop(&mut self, context: Resource<ContextResource>) -> wasmtime::Result<()> {
        self.table.delete(context)?;
        self.state.usage.contexts -= 1;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<TensorResource>> {
        // Shadowed by `add_tensor_constructor`'s, which takes the bytes from the guest's memory.
        let data = TensorData::from_guest(ty, &data)?;
        self.push_tensor(TensorResource { dimensions, ty, data, hold: None })
    }

    fn dimensions(&mut self, tensor: Resource<TensorResource>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.dimensions.clone())
    }

    fn ty(&mut self, tensor: Resource<TensorResource>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&tensor)?.ty)
    }

    fn data(&mut self, tensor: Resource<TensorResource>) -> wasmtime::Result<Vec<u8>> {
        // Shadowed by `add_tensor_data`'s, which lends the values to the lowering.
        Ok(self.table.get(&tensor)?.data.le_bytes().to_vec())
    }

    fn drop(&mut self, tensor: Resource<TensorResource>) -> wasmtime::Result<()> {
        self.delete_tensor(tensor)?.data.release();
        Ok(())
    }
}

impl errors::Host for NnView<'_> {
    fn convert_error(&mut self, err: ErrorResource) -> wasmtime::Result<ErrorResource> {
        Ok(err)
    }
}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, error: Resource<ErrorResource>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&error)?.code)
    }

    fn data(&mut self, error: Resource<ErrorResource>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.message.clone())
    }

    fn drop(&mut self, error: Resource<ErrorResource>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        self.state.usage.errors -= 1;
        Ok(())
    }
}

fn to_tensor(t: TensorResource) -> Result<Tensor, String> {
    if !matches!(t.ty, TensorType::Fp32) {
        return Err(format!("element type {:?} is not supported; refacen computes in FP32", t.ty));
    }
    let shape: Vec<usize> = t.dimensions.iter().map(|&d| d as usize).collect();
    let expected = nn::element_count(&shape)
        .and_then(|n| n.checked_mul(4).ok_or_else(|| NnError::too_large(nn::Excess::Fp32Values { count: n })))
        .map_err(|e| format!("dimensions {:?}: {e}", t.dimensions))?;
    if t.data.byte_len() != expected {
        return Err(format!(
            "dimensions {:?} need {expected} bytes of FP32 data, got {}",
            t.dimensions,
            t.data.byte_len()
        ));
    }
    let data = match t.data {
        // Made FP32 when the guest handed it over, or a compute's output handed back as an
        // input: either way the guest gave it up, so it moves.
        TensorData::Fp32(values) => TensorData::into_values(values),
        TensorData::Bytes(bytes) => {
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

fn from_tensor(t: Tensor) -> TensorResource {
    let dimensions = t.shape().iter().map(|&d| d as u32).collect();
    TensorResource {
        dimensions,
        ty: TensorType::Fp32,
        data: TensorData::Fp32(Arc::new(t.into_data())),
        hold: None,
    }
}
