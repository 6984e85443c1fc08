// ConvTranspose (crates/nn/src/gpu/plan/conv_transpose.rs): a direct kernel, one thread per
// output value, gathering the input values whose scattered taps land on it (the CPU backend
// scatters; the sums are the same). 2-D, groups, strides, dilations, pads, output padding.

// Whether `bias` holds a bias (otherwise it is a placeholder).
override HAS_BIAS: bool = false;

// Bindings (declared by params.rs, ConvTransposeParams): `prm`; reads x, w, bias; writes y.

@compute @workgroup_size(256)
fn conv_transpose(inv: Invocation) {
    let i = linear_index(inv);
    if i >= prm.total {
        return;
    }
    let ox = i % prm.win.out_w;
    let oy = (i / prm.win.out_w) % prm.win.out_h;
    let co = (i / (prm.win.out_w * prm.win.out_h)) % prm.out_c;
    let n = i / (prm.win.out_w * prm.win.out_h * prm.out_c);
    let g = co / prm.out_cg;
    let m = co % prm.out_cg;
    var acc = 0.0;
    if HAS_BIAS {
        acc = bias[co];
    }
    for (var c = g * prm.in_cg; c < (g + 1u) * prm.in_cg; c++) {
        for (var ky = 0u; ky < prm.win.kh; ky++) {
            // oy = iy · sh + ky · dh - pad_t, solved for iy.
            let ty = i32(oy + prm.win.pad_t) - i32(ky * prm.win.dh);
            if ty < 0 || u32(ty) % prm.win.sh != 0u || u32(ty) / prm.win.sh >= prm.win.in_h {
                continue;
            }
            let iy = u32(ty) / prm.win.sh;
            for (var kx = 0u; kx < prm.win.kw; kx++) {
                let tx = i32(ox + prm.win.pad_l) - i32(kx * prm.win.dw);
                if tx < 0 || u32(tx) % prm.win.sw != 0u || u32(tx) / prm.win.sw >= prm.win.in_w {
                    continue;
                }
                let ix = u32(tx) / prm.win.sw;
                let xv = x[((n * prm.in_c + c) * prm.win.in_h + iy) * prm.win.in_w + ix];
                let wv = w[((c * prm.out_cg + m) * prm.win.kh + ky) * prm.win.kw + kx];
                acc += xv * wv;
            }
        }
    }
    y[i] = acc;
}
