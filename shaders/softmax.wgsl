// Softmax (crates/nn/src/gpu/plan/eltwise.rs: `Op::Softmax`), both ONNX semantics: the host turns
// opset ≥ 13 (one axis) and the legacy coerce-to-2-D form (all dimensions from `axis` on)
// into rows of `len` values `inner` apart: row r starts at (r / inner) · len · inner + r % inner.
// As on the CPU: m = max, e = exp(v - m), out = e / Σ e.
//
// `softmax_rows`: one thread per row (short rows, e.g. 2 classes over a whole feature map).
// `softmax_wide`: one workgroup per row, reductions in workgroup memory (long rows).

// Bindings (declared by params.rs, SoftmaxParams): `prm`; reads x, writes y.

fn row_start(row: u32) -> u32 {
    return (row / prm.inner) * prm.len * prm.inner + row % prm.inner;
}

// A thread's share of a row: values j = first, first + stride, ... < len, `inner` apart from
// the elements xs (in x) and ys (in y) on.
struct Share {
    xs: u32,
    ys: u32,
    first: u32,
    stride: u32,
}

fn share(row: u32, first: u32, stride: u32) -> Share {
    let start = row_start(prm.base + row);
    return Share(start - prm.x_sub, start - prm.y_sub, first, stride);
}

// The maximum of the share's values.
fn share_max(s: Share) -> f32 {
    var m = neg_inf(prm.rows);
    for (var j = s.first; j < prm.len; j += s.stride) {
        m = max(m, x[s.xs + j * prm.inner]);
    }
    return m;
}

// Writes e = exp(v - m) for the share's values, and returns their sum.
fn share_exp(s: Share, m: f32) -> f32 {
    var sum = 0.0;
    for (var j = s.first; j < prm.len; j += s.stride) {
        let e = exp(x[s.xs + j * prm.inner] - m);
        y[s.ys + j * prm.inner] = e;
        sum += e;
    }
    return sum;
}

// Divides the share's outputs by sum (each thread rescales exactly the values it wrote: no
// barrier needed on y).
fn share_divide(s: Share, sum: f32) {
    for (var j = s.first; j < prm.len; j += s.stride) {
        y[s.ys + j * prm.inner] = y[s.ys + j * prm.inner] / sum;
    }
}

@compute @workgroup_size(256)
fn softmax_rows(inv: Invocation) {
    let row = linear_index(inv);
    if row >= prm.rows {
        return;
    }
    let s = share(row, 0u, 1u);
    share_divide(s, share_exp(s, share_max(s)));
}

@compute @workgroup_size(256)
fn softmax_wide(inv: Invocation) {
    let row = workgroup_index(inv);
    if row >= prm.rows {
        return;
    }
    let s = share(row, inv.lid, WG);
    let m = workgroup_reduce(inv.lid, share_max(s), true);
    share_divide(s, workgroup_reduce(inv.lid, share_exp(s, m), false));
}
