//! Running a plan: write the inputs, record its steps into compute passes (in bounded
//! submissions, or per node in profiled runs), copy the outputs to the staging buffer, submit
//! and read them back.

use std::time::Duration;

use super::context::Ctx;
use super::exec::{GpuExecutable, Output, Plan, Step};
use crate::NodeTiming;
use crate::{Deadline, NnError, Tensor};

/// Most work in one submission (flops), so that the deadline is checked between submissions.
const FLOPS_PER_SUBMISSION: u64 = 8_000_000_000;

impl GpuExecutable {
    pub(super) fn execute(
        &self,
        plan: &Plan,
        inputs: &[Tensor],
        timings: Option<&mut Vec<NodeTiming>>,
        deadline: Deadline,
    ) -> Result<Vec<Tensor>, NnError> {
        let ctx = &*self.ctx;
        for (buffer, tensor) in plan.inputs.iter().zip(inputs) {
            if !tensor.is_empty() {
                ctx.queue.write_buffer(buffer, 0, bytemuck::cast_slice(tensor.data()));
            }
        }
        let mut encoder = encoder(ctx);
        let mut timestamps = None;
        match timings {
            None => record_in_submissions(ctx, plan, &mut encoder, deadline)?,
            Some(timings) if ctx.timestamps => {
                timestamps = Some((record_timed(ctx, plan, &mut encoder), timings))
            }
            Some(timings) => self.run_each_node(plan, timings)?,
        }
        if let Some(staging) = &plan.staging {
            for output in &plan.outputs {
                if let Output::Device { buffer, offset, shape } = output {
                    let bytes = shape.iter().product::<usize>() as u64 * 4;
                    if bytes > 0 {
                        encoder.copy_buffer_to_buffer(buffer, 0, staging, *offset, bytes);
                    }
                }
            }
        }
        ctx.queue.submit([encoder.finish()]);
        let results = read_outputs(ctx, plan)?;
        if let Some((readback, timings)) = timestamps {
            let raw: Vec<u64> = bytemuck::pod_collect_to_vec(&map_read(ctx, &readback)?);
            let period = ctx.queue.get_timestamp_period() as f64;
            for (i, (_, shape, flops)) in plan.node_steps.iter().enumerate() {
                let ticks = raw[2 * i + 1].saturating_sub(raw[2 * i]);
                let elapsed = Duration::from_nanos((ticks as f64 * period) as u64);
                timings.push(self.timing(i, shape, *flops, elapsed));
            }
        }
        Ok(results)
    }

    /// Profiles without GPU timestamps: one submission per node, timed on the host.
    fn run_each_node(&self, plan: &Plan, timings: &mut Vec<NodeTiming>) -> Result<(), NnError> {
        let ctx = &*self.ctx;
        for (i, (range, shape, flops)) in plan.node_steps.iter().enumerate() {
            let started = std::time::Instant::now();
            let mut node_encoder = encoder(ctx);
            {
                let mut pass = node_encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for step in &plan.steps[range.clone()] {
                    record(&mut pass, step);
                }
            }
            ctx.queue.submit([node_encoder.finish()]);
            wait(ctx)?;
            timings.push(self.timing(i, shape, *flops, started.elapsed()));
        }
        Ok(())
    }

    fn timing(&self, index: usize, shape: &[usize], flops: u64, elapsed: Duration) -> NodeTiming {
        let node = &self.graph.nodes[index];
        NodeTiming {
            node: node.name.clone(),
            op: node.op.onnx_name(),
            output_shape: shape.to_vec(),
            elapsed,
            flops,
        }
    }
}

fn encoder(ctx: &Ctx) -> wgpu::CommandEncoder {
    ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
}

/// Records every step into `encoder`, submitting in bounded chunks with the deadline checked
/// between them: a graph with far more work than a call may take stops soon after its
/// deadline (a single dispatch cannot be interrupted). Ordinary graphs fit one chunk, which
/// the caller submits.
fn record_in_submissions(
    ctx: &Ctx,
    plan: &Plan,
    encoder: &mut wgpu::CommandEncoder,
    deadline: Deadline,
) -> Result<(), NnError> {
    let mut first = 0;
    let mut flops = 0;
    for (range, _, node_flops) in &plan.node_steps {
        flops += node_flops;
        if flops >= FLOPS_PER_SUBMISSION && range.end < plan.steps.len() {
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for step in &plan.steps[first..range.end] {
                    record(&mut pass, step);
                }
            }
            ctx.queue.submit([std::mem::replace(encoder, self::encoder(ctx)).finish()]);
            wait(ctx)?;
            deadline.check()?;
            (first, flops) = (range.end, 0);
        }
    }
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
    for step in &plan.steps[first..] {
        record(&mut pass, step);
    }
    Ok(())
}

/// Records every node in its own compute pass between two GPU timestamps; returns the buffer
/// the timestamps are copied to.
fn record_timed(ctx: &Ctx, plan: &Plan, encoder: &mut wgpu::CommandEncoder) -> wgpu::Buffer {
    let count = plan.node_steps.len().max(1) as u32 * 2;
    let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("node times"),
        ty: wgpu::QueryType::Timestamp,
        count,
    });
    for (i, (range, _, _)) in plan.node_steps.iter().enumerate() {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &queries,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            }),
        });
        for step in &plan.steps[range.clone()] {
            record(&mut pass, step);
        }
    }
    let resolved = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("node times"),
        size: count as u64 * 8,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("node times"),
        size: count as u64 * 8,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    if !plan.node_steps.is_empty() {
        encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
        encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, count as u64 * 8);
    }
    readback
}

/// Waits for the submitted work and reads the outputs back.
fn read_outputs(ctx: &Ctx, plan: &Plan) -> Result<Vec<Tensor>, NnError> {
    let mapped = match &plan.staging {
        Some(staging) => Some(map_read(ctx, staging)?),
        None => {
            wait(ctx)?;
            None
        }
    };
    let mut results = Vec::with_capacity(plan.outputs.len());
    for output in &plan.outputs {
        results.push(match output {
            Output::Constant(t) => t.as_ref().clone(),
            Output::Device { offset, shape, .. } => {
                let n: usize = shape.iter().product();
                if n == 0 {
                    results.push(Tensor::new(shape.clone(), Vec::new())?);
                    continue;
                }
                let bytes = mapped.as_deref().expect("staging buffer mapped");
                let data: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[*offset as usize..][..n * 4]);
                Tensor::new(shape.clone(), data)?
            }
        });
    }
    Ok(results)
}

fn record(pass: &mut wgpu::ComputePass<'_>, step: &Step) {
    pass.set_pipeline(&step.pipeline);
    pass.set_bind_group(0, &step.bind_group, &[]);
    pass.dispatch_workgroups(step.grid[0], step.grid[1], step.grid[2]);
}

/// Waits for all submitted work.
fn wait(ctx: &Ctx) -> Result<(), NnError> {
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map(|_| ())
        .map_err(|e| gpu_failed("waiting for the GPU", e))
}

/// Maps `buffer` (after the submitted work), copies its bytes out and unmaps it.
fn map_read(ctx: &Ctx, buffer: &wgpu::Buffer) -> Result<Vec<u8>, NnError> {
    let (tx, rx) = std::sync::mpsc::channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    wait(ctx)?;
    rx.recv()
        .map_err(|_| gpu_failed("reading the outputs back", "the mapping never finished"))?
        .map_err(|e| gpu_failed("reading the outputs back", e))?;
    let bytes = buffer.get_mapped_range(..).map_err(|e| gpu_failed("reading the outputs back", e))?.to_vec();
    buffer.unmap();
    Ok(bytes)
}

fn gpu_failed(during: &str, error: impl std::fmt::Display) -> NnError {
    NnError::runtime(crate::RuntimeFault::Gpu { during: during.to_string(), error: error.to_string() })
}
