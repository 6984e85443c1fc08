// Matrix products (crates/nn/src/gpu/plan/gemm.rs: `Op::Gemm`, `Op::MatMul`).
//
// out[b, m, n] = act(alpha · Σ_k A[b, m, k] · B[b, k, n] + beta · C[m, n])
//
// A and B are read through (row, column) element strides, so ONNX Gemm's trans_a/trans_b
// are only strides, and through per-batch offsets decoded from a broadcast batch shape, so
// numpy MatMul broadcasting needs no copies. C (Gemm only) is read through strides too, with
// stride 0 along a broadcast dimension. A workgroup of 256 threads computes a 64 × 64 tile,
// 4 × 4 values per thread, staging 16-deep slices of A and B in workgroup memory. The slice
// loads walk along whichever dimension is contiguous in memory (A_K_FAST / B_K_FAST). The
// tiling and the fused activation (override ACT) are tiled_product.wgsl's.

// Bindings (declared by params.rs, GemmParams): `prm`; reads a, b, c, slopes; writes out.

override HAS_C: bool = false;
// A's k index is contiguous (a_cs == 1): stage A walking k first. Likewise B (b_rs == 1).
override A_K_FAST: bool = true;
override B_K_FAST: bool = false;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

// [k][m] and [k][n] slices in vec4s: each thread reads its 4 rows and 4 columns of a slice
// with two 16-byte loads.
var<workgroup> tile_a: array<vec4<f32>, 256>; // BK · BM / 4
var<workgroup> tile_b: array<vec4<f32>, 256>; // BK · BN / 4

// PRelu has a slope per column.
fn prelu_slope(col: u32) -> f32 {
    return slopes[col];
}

// Position i of a slice of BK × `len` values (len: BM rows of A or BN columns of B) as
// (k, row or column, index in the staged slice): k varies fastest when the operand is
// contiguous along k, so that neighbouring threads read neighbouring addresses.
fn slice_position(i: u32, k_fast: bool, len: u32) -> vec3<u32> {
    let p = select(vec2<u32>(i / len, i % len), vec2<u32>(i % BK, i / BK), k_fast);
    return vec3<u32>(p, p.x * len + p.y);
}

// A[m, k] of the batch at element `off`, and B[k, n]: 0 outside the matrices (the read itself
// may then fall outside the binding, which the compiled shader's bounds checks make harmless).
fn a_at(off: u32, m: u32, k: u32) -> f32 {
    return select(0.0, a[off + m * prm.a_rs + k * prm.a_cs], m < prm.m && k < prm.k);
}

fn b_at(off: u32, k: u32, n: u32) -> f32 {
    return select(0.0, b[off + k * prm.b_rs + n * prm.b_cs], k < prm.k && n < prm.n);
}

@compute @workgroup_size(256)
fn gemm(inv: Invocation) {
    if workgroup_index(inv) >= prm.n_tiles * prm.m_tiles * prm.batches {
        return;
    }
    let t = tile_thread(inv, prm.n_tiles, prm.m_tiles);
    let offsets = broadcast_offsets(t.z, prm.batch_dims);
    let a_off = offsets.x;
    let b_off = offsets.y;

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < prm.k; k0 += BK) {
        // One pass stages both slices (BM == BN).
        for (var i = inv.lid; i < BK * BM; i += WG) {
            let pa = slice_position(i, A_K_FAST, BM);
            let pb = slice_position(i, B_K_FAST, BN);
            tile_a[pa.z / 4u][pa.z % 4u] = a_at(a_off, t.row0 + pa.y, k0 + pa.x);
            tile_b[pb.z / 4u][pb.z % 4u] = b_at(b_off, k0 + pb.x, t.col0 + pb.y);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            accumulate_outer(&acc, tile_a[kk * (BM / 4u) + t.tm], tile_b[kk * (BN / 4u) + t.tn]);
        }
        workgroupBarrier();
    }

    let out_base = t.z * prm.m * prm.n;
    for (var i = 0u; i < 4u; i++) {
        let m = t.row0 + t.tm * 4u + i;
        if m >= prm.m {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = t.col0 + t.tn * 4u + j;
            if n < prm.n {
                var v = prm.alpha * acc[i][j];
                if HAS_C {
                    v += prm.beta * c[m * prm.c_rs + n * prm.c_cs];
                }
                out[out_base + m * prm.n + n] = activate(v, n, prm.leaky);
            }
        }
    }
}
