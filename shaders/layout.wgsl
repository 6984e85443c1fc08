// Layout changes (crates/nn/src/gpu/plan/layout.rs: `Op::Transpose`, `Op::Concat`, `Op::Pad`).
// One thread per output value (Concat: per value of one input). Reshape, Flatten, Squeeze,
// Unsqueeze and Identity never reach the GPU: the host aliases the buffer.
//
// Shapes of rank ≤ 8 (the host merges dimensions that stay adjacent, so a Transpose of any
// rank whose permutation moves at most 8 blocks fits).

@group(0) @binding(0) var<storage, read> tprm: TransposeParams;
@group(0) @binding(0) var<storage, read> pprm: PadParams;
@group(0) @binding(0) var<storage, read> cprm: ConcatParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn transpose(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if i >= tprm.total {
        return;
    }
    var src = 0u;
    var rest = i;
    for (var d = i32(tprm.rank) - 1; d >= 0; d--) {
        src += (rest % tprm.shape[d]) * tprm.strides[d];
        rest = rest / tprm.shape[d];
    }
    y[i] = x[src];
}

@compute @workgroup_size(256)
fn pad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if i >= pprm.total {
        return;
    }
    var src = 0u;
    var inside = true;
    var rest = i;
    for (var d = i32(pprm.rank) - 1; d >= 0; d--) {
        let coord = i32(rest % pprm.out_shape[d]) - pprm.begin[d];
        rest = rest / pprm.out_shape[d];
        if coord < 0 || coord >= i32(pprm.in_shape[d]) {
            inside = false;
        } else {
            src += u32(coord) * pprm.in_strides[d];
        }
    }
    var v = pprm.value;
    if inside {
        v = x[src];
    }
    y[i] = v;
}

@compute @workgroup_size(256)
fn concat(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if i >= cprm.total {
        return;
    }
    let outer = i / cprm.block;
    let j = i % cprm.block;
    y[outer * cprm.out_block + cprm.offset + j] = x[i];
}
