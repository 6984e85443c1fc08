// Layout changes (crates/nn/src/gpu/plan/layout.rs: `Op::Transpose`, `Op::Concat`; Pad, in every
// mode, is gather.wgsl's `index_map`).
// One thread per output value (Concat: per value of one input). Reshape, Flatten, Squeeze,
// Unsqueeze and Identity never reach the GPU: the host aliases the buffer.
//
// Shapes of rank ≤ 8 (the host merges dimensions that stay adjacent, so a Transpose of any
// rank whose permutation moves at most 8 blocks fits).

// Bindings (declared by params.rs): `tprm` (TransposeParams) or `cprm` (ConcatParams); reads x,
// writes y.

@compute @workgroup_size(256)
fn transpose(inv: Invocation) {
    let i = linear_index(inv);
    if i >= tprm.total {
        return;
    }
    y[i] = x[strided_offset(i, tprm.rank, tprm.shape, tprm.strides)];
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
