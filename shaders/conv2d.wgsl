// 2-D convolution (crates/nn/src/gpu/plan/conv.rs: `Op::Conv`).
//
// `conv2d` is an implicit GEMM: for each group g, out[m, p] = Σ_k W[m, k] · X[k, p] with
// m an output channel of the group, k = (input channel, ky, kx) and p = (image, oy, ox) over
// the WHOLE batch, so small maps with a large batch still fill the GPU. A workgroup of 256
// threads computes a BM × BN tile of out (each thread 4 × 4 values in registers), staging
// BK-deep slices of W and of the im2col matrix X in workgroup memory; X is never
// materialised: each thread gathers its column of the slice from the image on the fly
// (zero outside the padded image), through a per-k table of tap offsets. With POINTWISE (1x1 kernel, stride 1, no padding) the
// gather is a plain strided read. Bias and the fused activation are applied in the epilogue.
//
// `depthwise` is a direct kernel for one filter per channel (groups == channels), where a
// GEMM would have k = kh·kw: one thread per output value.
//
// Weights are re-laid out once per prepared graph to [group][k][m] (m fastest), so the
// W-slice loads are coalesced; for depthwise that is the ONNX layout [C][kh·kw] unchanged.
//
// Tiles: (BM, BN, BK) ∈ {(64, 64, 16), (32, 128, 16), (16, 256, 8)}, chosen on the host by
// the number of output channels per group; BM · BN = 256 · 16 always. The tiling and the
// fused activation (override ACT) are tiled_product.wgsl's.

// Bindings (declared by params.rs, ConvParams): `prm`; reads x, wt, chan, taps; writes y.

// Output channels per tile.
override BM: u32 = 64u;
// Output pixels per tile: 256 · 16 / BM (each thread computes 4 x 4 values).
override BN: u32 = 64u;
// Depth of one staged slice.
override BK: u32 = 16u;
// 1x1 kernel, stride 1, no padding: X[k, p] is input channel k at pixel p.
override POINTWISE: bool = false;

// Slices in vec4s, so that each thread reads its 4 rows and its 4 columns of a slice with two
// 16-byte loads. Sized for the largest configurations: BK · BM ≤ 1024, BK · BN ≤ 2048.
var<workgroup> tile_w: array<vec4<f32>, 256>;
var<workgroup> tile_x: array<vec4<f32>, 512>;

// PRelu slopes follow the bias in `chan`.
fn prelu_slope(c: u32) -> f32 {
    return chan[prm.out_c + c];
}

@compute @workgroup_size(256)
fn conv2d(inv: Invocation) {
    if workgroup_index(inv) >= prm.p_tiles * prm.m_tiles * prm.groups {
        return;
    }
    // Rows: the group's output channels from t.row0; columns: pixels from t.col0.
    let t = tile_thread(inv, prm.p_tiles, prm.m_tiles);
    let g = t.z;

    let plane = prm.win.out_h * prm.win.out_w;
    let in_plane = prm.win.in_h * prm.win.in_w;

    // The output pixel whose im2col column this thread gathers (the same for every slice,
    // since BN divides the workgroup size).
    let p_load = t.col0 + inv.lid % BN;
    let p_ok = p_load < prm.pixels;
    let n_l = prm.n_base + p_load / plane;
    let pix_l = p_load % plane;
    let origin = window_origin(prm.win, pix_l / prm.win.out_w, pix_l % prm.win.out_w);
    let iy0 = origin.x;
    let ix0 = origin.y;
    let x_base = (n_l * prm.in_c + g * prm.in_cg) * in_plane - prm.x_sub;
    let w_base = g * prm.k;

    // acc[i] holds the 4 pixels of the thread's channel i.
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < prm.k; k0 += BK) {
        for (var i = inv.lid; i < BK * BM; i += WG) {
            let k = k0 + i / BM;
            let m = t.row0 + i % BM;
            var v = 0.0;
            if k < prm.k && m < prm.m_count {
                v = wt[(w_base + k) * prm.out_cg + prm.m_base + m];
            }
            tile_w[i / 4u][i % 4u] = v;
        }
        for (var i = inv.lid; i < BK * BN; i += WG) {
            let k = k0 + i / BN;
            var v = 0.0;
            if p_ok && k < prm.k {
                if POINTWISE {
                    v = x[x_base + k * in_plane + pix_l];
                } else {
                    let tap = taps[k];
                    let iy = iy0 + i32(tap.y);
                    let ix = ix0 + i32(tap.z);
                    if iy >= 0 && iy < i32(prm.win.in_h) && ix >= 0 && ix < i32(prm.win.in_w) {
                        v = x[x_base + tap.x * in_plane + u32(iy) * prm.win.in_w + u32(ix)];
                    }
                }
            }
            tile_x[i / 4u][i % 4u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            accumulate_outer(&acc, tile_w[kk * (BM / 4u) + t.tm], tile_x[kk * (BN / 4u) + t.tn]);
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < 4u; j++) {
        let p = t.col0 + t.tn * 4u + j;
        if p >= prm.pixels {
            continue;
        }
        let n = prm.n_base + p / plane;
        let pix = p % plane;
        for (var i = 0u; i < 4u; i++) {
            let m = t.row0 + t.tm * 4u + i;
            if m < prm.m_count {
                let c = g * prm.out_cg + prm.m_base + m;
                y[(n * prm.out_c + c) * plane + pix - prm.y_sub] = activate(acc[i][j] + chan[c], c, prm.alpha);
            }
        }
    }
}

@compute @workgroup_size(256)
fn depthwise(inv: Invocation) {
    let index = linear_index(inv);
    let plane = prm.win.out_h * prm.win.out_w;
    if index >= prm.pixels * prm.m_count {
        return;
    }
    let ox = index % prm.win.out_w;
    let oy = (index / prm.win.out_w) % prm.win.out_h;
    let c = prm.m_base + (index / plane) % prm.m_count;
    let n = prm.n_base + index / (plane * prm.m_count);
    let src = (n * prm.in_c + c) * prm.win.in_h * prm.win.in_w - prm.x_sub;
    let filter_start = c * prm.win.kh * prm.win.kw;
    let origin = window_origin(prm.win, oy, ox);
    let iy0 = origin.x;
    let ix0 = origin.y;
    var acc = chan[c];
    for (var ky = 0u; ky < prm.win.kh; ky++) {
        let iy = iy0 + i32(ky * prm.win.dh);
        if iy < 0 || iy >= i32(prm.win.in_h) {
            continue;
        }
        for (var kx = 0u; kx < prm.win.kw; kx++) {
            let ix = ix0 + i32(kx * prm.win.dw);
            if ix >= 0 && ix < i32(prm.win.in_w) {
                acc += x[src + u32(iy) * prm.win.in_w + u32(ix)] * wt[filter_start + ky * prm.win.kw + kx];
            }
        }
    }
    y[(n * prm.out_c + c) * plane + oy * prm.win.out_w + ox - prm.y_sub] = activate(acc, c, prm.alpha);
}
