// Ops that read their input through index tables the host computes per plan
// (crates/nn/src/gpu/plan/gather.rs): Slice, Gather and Pad in every mode (`index_map`), Resize
// one axis at a time (`resize_axis`), and ReduceSum/ReduceMean (`reduce`). One thread per output
// value. Shapes of rank ≤ 8.

// The table entry meaning "no input value here" (Pad's constant).
const NO_SOURCE: u32 = 0xffffffffu;

// Bindings (declared by params.rs): index_map `mprm` (IndexMapParams) and resize_axis `aprm`
// (ResizeAxisParams) read x, table and write y; reduce `rprm` (ReduceParams) reads x, writes reduce_out.

@compute @workgroup_size(256)
fn index_map(inv: Invocation) {
    let i = linear_index(inv);
    if i >= mprm.total {
        return;
    }
    var src = 0u;
    var inside = true;
    var rest = i;
    for (var d = i32(mprm.rank) - 1; d >= 0; d--) {
        let entry = table[mprm.table_base[d] + rest % mprm.out_shape[d]];
        rest = rest / mprm.out_shape[d];
        inside = inside && entry != NO_SOURCE;
        src += select(0u, entry, entry != NO_SOURCE);
    }
    y[i] = select(mprm.value, x[src], inside);
}

@compute @workgroup_size(256)
fn resize_axis(inv: Invocation) {
    let i = linear_index(inv);
    if i >= aprm.total {
        return;
    }
    let k = i % aprm.inner;
    let j = (i / aprm.inner) % aprm.len_out;
    let o = i / (aprm.inner * aprm.len_out);
    let plane = o * aprm.len_in;
    let a = x[(plane + table[4u * j]) * aprm.inner + k];
    let b = x[(plane + table[4u * j + 1u]) * aprm.inner + k];
    let w0 = bitcast<f32>(table[4u * j + 2u]);
    let w1 = bitcast<f32>(table[4u * j + 3u]);
    y[i] = select(w0 * a + w1 * b, a, w1 == 0.0);
}

@compute @workgroup_size(256)
fn reduce(inv: Invocation) {
    let i = linear_index(inv);
    if i >= rprm.total {
        return;
    }
    let base = strided_offset(i, rprm.kept_rank, rprm.kept_shape, rprm.kept_strides);
    var sum = 0.0;
    for (var k = 0u; k < rprm.count; k++) {
        sum += x[base + strided_offset(k, rprm.reduced_rank, rprm.reduced_shape, rprm.reduced_strides)];
    }
    reduce_out[i] = sum * rprm.scale;
}
