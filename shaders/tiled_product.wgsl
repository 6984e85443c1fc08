// Shared by conv2d.wgsl and gemm.wgsl, the two kernels that compute their output as a tiled
// matrix product (crates/nn/src/gpu/kernels.rs puts it after the prelude in their modules).
// A workgroup computes a BM × BN tile of the output matrix (rows: gemm's m, conv2d's output
// channels of a group; columns: gemm's n, conv2d's pixels), each of its 256 threads 4 × 4
// values held in registers, from BK-deep slices of both operands staged in workgroup memory.
// Each of the two files declares BM, BN and BK, and defines `prelu_slope(channel)`: where its
// PRelu slopes are (one per output channel: conv2d's rows, gemm's columns).

// Fused activation: an ACT_* code (prelude.wgsl's `fused_activation`).
override ACT: u32 = ACT_NONE;

// A thread's share of its workgroup's tile: rows row0 + 4·tm + i and columns col0 + 4·tn + j.
struct TileThread {
    row0: u32,
    col0: u32,
    // The tile's third coordinate (gemm's batch, conv2d's group).
    z: u32,
    tm: u32,
    tn: u32,
}

// The invocation's TileThread in a grid of col_tiles · row_tiles · z tiles, columns fastest
// (callers first skip the excess workgroups of the grid's last row: a uniform test, before
// any barrier).
fn tile_thread(inv: Invocation, col_tiles: u32, row_tiles: u32) -> TileThread {
    let c = tile_coords(workgroup_index(inv), col_tiles, row_tiles);
    return TileThread(c.y * BM, c.x * BN, c.z, inv.lid / (BN / 4u), inv.lid % (BN / 4u));
}

// One k step of a thread's 4 × 4 values: acc[i] += a[i] · b, with a its 4 rows' values of the
// staged slice of the left operand and b its 4 columns' of the right one.
fn accumulate_outer(acc: ptr<function, array<vec4<f32>, 4>>, a: vec4<f32>, b: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(a.x), b, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a.y), b, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a.z), b, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a.w), b, (*acc)[3]);
}

// v, a value of output channel `channel`, activated; `leaky` is LeakyRelu's slope.
fn activate(v: f32, channel: u32, leaky: f32) -> f32 {
    var slope = 0.0;
    if ACT == ACT_PRELU {
        slope = prelu_slope(channel);
    }
    return fused_activation(ACT, v, leaky, slope);
}
