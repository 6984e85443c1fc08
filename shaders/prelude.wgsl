// Shared by every kernel file: prepended to each file when its shader module is created
// (crates/nn/src/gpu/kernels.rs), so the files use these names without declaring them.
// Before it come the declarations crates/nn/src/gpu/params.rs writes: MAX_RANK, the op codes
// (ACT_*, UNARY_*, BINARY_*), the structs Window2d and Broadcast, the file's params structs
// with their binding-0 variables, and the storage buffers their entry points bind.

// Invocations per workgroup, in every kernel.
const WG: u32 = 256u;

// What every kernel's entry point takes. Grids are 2-D only to stay under the per-dimension
// limit; kernels number their workgroups linearly (skipping the excess of the last row).
struct Invocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

// The workgroup's number.
fn workgroup_index(inv: Invocation) -> u32 {
    return inv.wid.x + inv.wid.y * inv.nwg.x;
}

// The invocation's number over the whole grid (kernels with one invocation per value).
fn linear_index(inv: Invocation) -> u32 {
    return workgroup_index(inv) * WG + inv.lid;
}

// The input position of output pixel (oy, ox)'s first tap (row, column; negative in the
// padding).
fn window_origin(w: Window2d, oy: u32, ox: u32) -> vec2<i32> {
    return vec2<i32>(i32(oy * w.sh) - i32(w.pad_t), i32(ox * w.sw) - i32(w.pad_l));
}

// acc and v combined: the maximum with `take_max` (acc where v is NaN), otherwise the sum.
fn combine(acc: f32, v: f32, take_max: bool) -> f32 {
    return select(acc + v, select(acc, v, v > acc), take_max);
}

// The element offset of row-major index `index` of a tensor with dimensions `shape[..rank]`,
// read through per-dimension element `strides` (0 along a broadcast dimension).
fn strided_offset(
    index: u32,
    rank: u32,
    shape: array<u32, MAX_RANK>,
    strides: array<u32, MAX_RANK>,
) -> u32 {
    var offset = 0u;
    var rest = index;
    for (var d = i32(rank) - 1; d >= 0; d--) {
        offset += (rest % shape[d]) * strides[d];
        rest = rest / shape[d];
    }
    return offset;
}

// The element offsets in A and in B of row-major index `index` of a broadcast shape.
fn broadcast_offsets(index: u32, bc: Broadcast) -> vec2<u32> {
    return vec2<u32>(
        strided_offset(index, bc.rank, bc.shape, bc.a_strides),
        strided_offset(index, bc.rank, bc.shape, bc.b_strides),
    );
}

// Scratch of `workgroup_reduce`.
var<workgroup> partial: array<f32, 256>;

// Every invocation's `v` combined over the workgroup (the maximum with `take_max`, otherwise
// the sum), returned to each invocation. Call it in uniform control flow: it synchronizes the
// workgroup. A maximum keeps the first operand where the other is NaN.
fn workgroup_reduce(lid: u32, v: f32, take_max: bool) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            partial[lid] = combine(partial[lid], partial[lid + half], take_max);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Before `partial` is written again.
    workgroupBarrier();
    return total;
}

// Tile number `tile` of a grid of x_tiles · y_tiles · z tiles, x fastest: its (x, y, z).
fn tile_coords(tile: u32, x_tiles: u32, y_tiles: u32) -> vec3<u32> {
    let rest = tile / x_tiles;
    return vec3<u32>(tile % x_tiles, rest % y_tiles, rest / y_tiles);
}

// -inf. Built at run time from `any` run-time value: shader compilers reject a constant
// infinity.
fn neg_inf(any: u32) -> f32 {
    return bitcast<f32>(0xff800000u | (any & 0u));
}

// Fused activation `act` (an ACT_* code) of v: `alpha` is LeakyRelu's slope, `slope` PRelu's
// slope for v's channel (callers read it only when act == ACT_PRELU).
fn fused_activation(act: u32, v: f32, alpha: f32, slope: f32) -> f32 {
    if act == ACT_RELU {
        return max(v, 0.0);
    }
    if act == ACT_LEAKY_RELU {
        return select(v, v * alpha, v < 0.0);
    }
    if act == ACT_PRELU {
        return select(v, v * slope, v < 0.0);
    }
    return v;
}
