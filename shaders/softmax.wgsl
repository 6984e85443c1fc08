// Softmax (crates/nn/src/gpu/plan/eltwise.rs: `Op::Softmax`), both ONNX semantics: the host turns
// opset ≥ 13 (one axis) and the legacy coerce-to-2-D form (all dimensions from `axis` on)
// into rows of `len` values `inner` apart: row r starts at (r / inner) · len · inner + r % inner.
// As on the CPU: m = max, e = exp(v - m), out = e / Σ e.
//
// `softmax_rows`: one thread per row (short rows, e.g. 2 classes over a whole feature map).
// `softmax_wide`: one workgroup per row, reductions in workgroup memory (long rows).

@group(0) @binding(0) var<storage, read> prm: SoftmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, 256>;

fn row_start(row: u32) -> u32 {
    return (row / prm.inner) * prm.len * prm.inner + row % prm.inner;
}

@compute @workgroup_size(256)
fn softmax_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_index(wid, nwg, lid);
    if row >= prm.rows {
        return;
    }
    let start = row_start(prm.base + row);
    let xs = start - prm.x_sub;
    let ys = start - prm.y_sub;
    let step = prm.inner;
    var m = neg_inf(prm.rows);
    for (var j = 0u; j < prm.len; j++) {
        m = max(m, x[xs + j * step]);
    }
    var sum = 0.0;
    for (var j = 0u; j < prm.len; j++) {
        let e = exp(x[xs + j * step] - m);
        y[ys + j * step] = e;
        sum += e;
    }
    for (var j = 0u; j < prm.len; j++) {
        y[ys + j * step] = y[ys + j * step] / sum;
    }
}

@compute @workgroup_size(256)
fn softmax_wide(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = workgroup_index(wid, nwg);
    if row >= prm.rows {
        return;
    }
    let start = row_start(prm.base + row);
    let xs = start - prm.x_sub;
    let ys = start - prm.y_sub;
    let step = prm.inner;

    var m = neg_inf(prm.rows);
    for (var j = lid; j < prm.len; j += WG) {
        m = max(m, x[xs + j * step]);
    }
    partial[lid] = m;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            partial[lid] = max(partial[lid], partial[lid + half]);
        }
        workgroupBarrier();
    }
    m = partial[0];
    workgroupBarrier();

    var sum = 0.0;
    for (var j = lid; j < prm.len; j += WG) {
        let e = exp(x[xs + j * step] - m);
        y[ys + j * step] = e;
        sum += e;
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    sum = partial[0];
    // Each thread rescales exactly the values it wrote: no barrier needed on y.
    for (var j = lid; j < prm.len; j += WG) {
        y[ys + j * step] = y[ys + j * step] / sum;
    }
}
