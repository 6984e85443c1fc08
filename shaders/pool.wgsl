// Pooling (crates/nn/src/gpu/plan/pool.rs: `Op::Pool`, `Op::GlobalPool`), the CPU backend's
// semantics exactly (crates/nn/src/cpu: pool2d, global_pool):
//
// - taps outside the image never contribute (max: the maximum of the taps inside, -inf when
//   there is none; average: their sum);
// - the average divides by the number of taps inside the image, or with count_include_pad
//   by the number inside the DECLARED padding (taps in the ceil_mode overhang beyond the end
//   padding never count), at least 1;
// - padding and output sizes come resolved from crates/nn/src/shape.rs (ceil_mode, SAME_*).
//
// Bindings (declared by params.rs): `prm` (PoolParams) or `gprm` (GlobalPoolParams); reads x,
// writes y.

override MAX: bool = true;
override COUNT_PAD: bool = false;

@compute @workgroup_size(256)
fn pool2d(inv: Invocation) {
    let index = linear_index(inv);
    let out_plane = prm.win.out_h * prm.win.out_w;
    if index >= prm.planes * out_plane {
        return;
    }
    let ox = index % prm.win.out_w;
    let oy = (index / prm.win.out_w) % prm.win.out_h;
    let plane = prm.base + index / out_plane;
    let src = plane * prm.win.in_h * prm.win.in_w - prm.x_sub;
    let origin = window_origin(prm.win, oy, ox);
    let y0 = origin.x;
    let x0 = origin.y;
    let y_end = i32(prm.win.in_h + prm.pad_b);
    let x_end = i32(prm.win.in_w + prm.pad_r);

    // Taps per axis inside the image and inside the declared padding.
    var x_inside = 0u;
    var x_padded = 0u;
    for (var kx = 0u; kx < prm.win.kw; kx++) {
        let ix = x0 + i32(kx * prm.win.dw);
        x_inside += select(0u, 1u, ix >= 0 && ix < i32(prm.win.in_w));
        x_padded += select(0u, 1u, ix < x_end);
    }
    var y_inside = 0u;
    var y_padded = 0u;
    var acc = 0.0;
    if MAX {
        acc = neg_inf(prm.planes);
    }
    for (var ky = 0u; ky < prm.win.kh; ky++) {
        let iy = y0 + i32(ky * prm.win.dh);
        y_padded += select(0u, 1u, iy < y_end);
        if iy < 0 || iy >= i32(prm.win.in_h) {
            continue;
        }
        y_inside += 1u;
        let row = src + u32(iy) * prm.win.in_w;
        for (var kx = 0u; kx < prm.win.kw; kx++) {
            let ix = x0 + i32(kx * prm.win.dw);
            if ix >= 0 && ix < i32(prm.win.in_w) {
                acc = combine(acc, x[row + u32(ix)], MAX);
            }
        }
    }
    if !MAX {
        var divisor = y_inside * x_inside;
        if COUNT_PAD {
            divisor = y_padded * x_padded;
        }
        acc = acc / f32(max(divisor, 1u));
    }
    y[prm.base * out_plane + index - prm.y_sub] = acc;
}

// One workgroup per plane: a strided pass, then a tree reduction in workgroup memory.
@compute @workgroup_size(256)
fn global_pool(inv: Invocation) {
    let lid = inv.lid;
    let plane = workgroup_index(inv);
    if plane >= gprm.planes {
        return;
    }
    let start = (gprm.base + plane) * gprm.size - gprm.x_sub;
    var acc = 0.0;
    if MAX {
        acc = neg_inf(gprm.planes);
    }
    for (var i = lid; i < gprm.size; i += WG) {
        acc = combine(acc, x[start + i], MAX);
    }
    let v = workgroup_reduce(lid, acc, MAX);
    if lid == 0u {
        y[gprm.base + plane - gprm.y_sub] = select(v / f32(gprm.size), v, MAX);
    }
}
