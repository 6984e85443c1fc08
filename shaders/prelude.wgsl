// Shared by every kernel file: prepended to each file when its shader module is created
// (crates/nn/src/gpu/kernels.rs), so the files use these names without declaring them.
// Before it come the declarations crates/nn/src/gpu/params.rs writes: MAX_RANK,
// MAX_BATCH_RANK, the op codes (ACT_*, UNARY_*, BINARY_*) and the file's params structs.

// Invocations per workgroup, in every kernel.
const WG: u32 = 256u;

// The workgroup's number: grids are 2-D only to stay under the per-dimension limit, and
// kernels number their workgroups linearly (skipping the excess of the last row).
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The invocation's number over the whole grid (kernels with one invocation per value).
fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return workgroup_index(wid, nwg) * WG + lid;
}

// -inf. Built at run time from `any` run-time value: shader compilers reject a constant
// infinity.
fn neg_inf(any: u32) -> f32 {
    return bitcast<f32>(0xff800000u | (any & 0u));
}

// Fused activation `act` (an ACT_* code) of v: `alpha` is LeakyRelu's slope, `slope` PRelu's
// slope for v's channel (callers read it only when act == ACT_PRELU).
fn fused_activation(act: u32, v: f32, alpha: f32, slope: f32) -> f32 {
    if act == ACT_RELU {
        return max(v, 0.0);
    }
    if act == ACT_LEAKY_RELU {
        return select(v, v * alpha, v < 0.0);
    }
    if act == ACT_PRELU {
        return select(v, v * slope, v < 0.0);
    }
    return v;
}
