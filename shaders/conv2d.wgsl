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
// the number of output channels per group; BM · BN = 256 · 16 always.

// Parameters: `prm` (ConvParams, bound by the declarations params.rs prepends).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
// bias[out_c], then the PRelu slopes[out_c] when ACT == ACT_PRELU.
@group(0) @binding(3) var<storage, read> chan: array<f32>;
// Per k (conv2d only): (input channel within the group, ky · dh, kx · dw, 0), so that the
// gather needs no division.
@group(0) @binding(4) var<storage, read> taps: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// Output channels per tile.
override BM: u32 = 64u;
// Output pixels per tile: 256 · 16 / BM (each thread computes 4 x 4 values).
override BN: u32 = 64u;
// Depth of one staged slice.
override BK: u32 = 16u;
// Fused activation: an ACT_* code (prelude.wgsl); PRelu has per-channel slopes.
override ACT: u32 = ACT_NONE;
// 1x1 kernel, stride 1, no padding: X[k, p] is input channel k at pixel p.
override POINTWISE: bool = false;

// Slices in vec4s, so that each thread reads its 4 rows and its 4 columns of a slice with two
// 16-byte loads. Sized for the largest configurations: BK · BM ≤ 1024, BK · BN ≤ 2048.
var<workgroup> tile_w: array<vec4<f32>, 256>;
var<workgroup> tile_x: array<vec4<f32>, 512>;

fn activate(v: f32, c: u32) -> f32 {
    var slope = 0.0;
    if ACT == ACT_PRELU {
        slope = chan[prm.out_c + c];
    }
    return fused_activation(ACT, v, prm.alpha, slope);
}

@compute @workgroup_size(256)
fn conv2d(inv: Invocation) {
    let lid = inv.lid;
    let tile = workgroup_index(inv);
    if tile >= prm.p_tiles * prm.m_tiles * prm.groups {
        return;
    }
    let t = tile_coords(tile, prm.p_tiles, prm.m_tiles);
    let p0 = t.x * BN;
    let m0 = t.y * BM;
    let g = t.z;

    let plane = prm.win.out_h * prm.win.out_w;
    let in_plane = prm.win.in_h * prm.win.in_w;

    // The output pixel whose im2col column this thread gathers (the same for every slice,
    // since BN divides the workgroup size).
    let p_load = p0 + lid % BN;
    let p_ok = p_load < prm.pixels;
    let n_l = prm.n_base + p_load / plane;
    let pix_l = p_load % plane;
    let origin = window_origin(prm.win, pix_l / prm.win.out_w, pix_l % prm.win.out_w);
    let iy0 = origin.x;
    let ix0 = origin.y;
    let x_base = (n_l * prm.in_c + g * prm.in_cg) * in_plane - prm.x_sub;
    let w_base = g * prm.k;

    // This thread's 4 x 4 outputs: channels m0 + 4·tm + i, pixels p0 + 4·tn + j;
    // acc[i] holds the 4 pixels of channel i.
    let tn = lid % (BN / 4u);
    let tm = lid / (BN / 4u);
    var acc: array<vec4<f32>, 4>;

    for (var k0 = 0u; k0 < prm.k; k0 += BK) {
        for (var i = lid; i < BK * BM; i += WG) {
            let k = k0 + i / BM;
            let m = m0 + i % BM;
            var v = 0.0;
            if k < prm.k && m < prm.m_count {
                v = wt[(w_base + k) * prm.out_cg + prm.m_base + m];
            }
            tile_w[i / 4u][i % 4u] = v;
        }
        for (var i = lid; i < BK * BN; i += WG) {
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
            let a = tile_w[kk * (BM / 4u) + tm];
            let b = tile_x[kk * (BN / 4u) + tn];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < 4u; j++) {
        let p = p0 + tn * 4u + j;
        if p >= prm.pixels {
            continue;
        }
        let n = prm.n_base + p / plane;
        let pix = p % plane;
        for (var i = 0u; i < 4u; i++) {
            let m = m0 + tm * 4u + i;
            if m < prm.m_count {
                let c = g * prm.out_cg + prm.m_base + m;
                y[(n * prm.out_c + c) * plane + pix - prm.y_sub] = activate(acc[i][j] + chan[c], c);
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
    y[(n * prm.out_c + c) * plane + oy * prm.win.out_w + ox - prm.y_sub] = activate(acc, c);
}
