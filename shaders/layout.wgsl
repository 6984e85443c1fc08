// Layout changes (crates/nn/src/gpu/plan/layout.rs: `Op::Transpose`, `Op::Concat`, `Op::Pad`).
// One thread per output value (Concat: per value of one input). Reshape, Flatten, Squeeze,
// Unsqueeze and Identity never reach the GPU: the host aliases the buffer.
//
// Shapes of rank ≤ 8 (the host merges dimensions that stay adjacent, so a Transpose of any
// rank whose permutation moves at most 8 blocks fits).

// Parameters, bound by the declarations params.rs prepends: `tprm` (TransposeParams), `pprm`
// (PadParams), `cprm` (ConcatParams).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn transpose(inv: Invocation) {
    let i = linear_index(inv);
    if i >= tprm.total {
        return;
    }
    y[i] = x[strided_offset(i, tprm.rank, tprm.shape, tprm.strides)];
}

@compute @workgroup_size(256)
fn pad(inv: Invocation) {
    let i = linear_index(inv);
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
fn concat(inv: Invocation) {
    let i = linear_index(inv);
    if i >= cprm.total {
        return;
    }
    let outer = i / cprm.block;
    let j = i % cprm.block;
    y[outer * cprm.out_block + cprm.offset + j] = x[i];
}
