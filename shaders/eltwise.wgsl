// Element-wise ops (crates/nn/src/gpu/plan/eltwise.rs: `Op::Unary`, `Op::Binary`, `Op::PRelu`,
// `Op::BatchNorm`). One thread per output value.
//
// `binary` broadcasts numpy-style: the host right-aligns both operand shapes to the output,
// merges adjacent dimensions that broadcast alike (so rank ≤ 8 covers every practical case)
// and passes, per output dimension, each operand's element stride (0 where it broadcasts).
// SAME_SHAPE skips the index arithmetic when neither operand broadcasts.

// A UNARY_* code (the host's `UnaryOp`; crates/nn/src/gpu/params.rs declares the constants):
// LeakyRelu reads alpha, Clip lo and hi, HardSigmoid alpha and (beta) lo.
override UNARY_OP: u32 = UNARY_RELU;
// A BINARY_* code (the host's `BinaryOp`).
override BINARY_OP: u32 = BINARY_ADD;
override SAME_SHAPE: bool = false;

// Every kernel here may cover only values [base, base + total) of its output (tensors larger
// than one buffer binding are split so); *_sub is the element where a binding starts.

// Bindings (declared by params.rs): unary `uprm` (UnaryParams), reads in0, writes unary_out;
// binary `bprm` (BinaryParams), reads in0, in1 (a, b), writes binary_out; batch_norm `nprm`
// (BatchNormParams), reads in0..in4 (x, scale, bias, mean, var), writes norm_out.

// tanh that saturates to ±1 instead of overflowing to inf/inf for large |x|.
fn tanh_stable(x: f32) -> f32 {
    let t = exp(-2.0 * abs(x));
    let r = (1.0 - t) / (1.0 + t);
    return select(r, -r, x < 0.0);
}

// a^b as the CPU's powf: WGSL's pow is undefined for a < 0, so negative bases take the
// magnitude's power with the sign of an odd integer exponent, and are NaN for a fractional one.
fn pow_signed(a: f32, b: f32) -> f32 {
    let p = pow(abs(a), b);
    if a >= 0.0 || a != a {
        return select(p, 1.0, b == 0.0);
    }
    if b != floor(b) {
        // NaN, built from a run-time value (compilers may reject a constant one).
        return bitcast<f32>(0x7fc00000u | (bitcast<u32>(a) & 0u));
    }
    let odd = abs(b) < 16777216.0 && (i32(abs(b)) & 1) == 1;
    return select(p, -p, odd);
}

@compute @workgroup_size(256)
fn unary(inv: Invocation) {
    let local = linear_index(inv);
    if local >= uprm.total {
        return;
    }
    let i = uprm.base + local;
    let v = in0[i - uprm.x_sub];
    var r = v;
    switch UNARY_OP {
        case UNARY_RELU: {
            r = max(v, 0.0);
        }
        case UNARY_LEAKY_RELU: {
            r = select(v, v * uprm.alpha, v < 0.0);
        }
        case UNARY_SIGMOID: {
            r = 1.0 / (1.0 + exp(-v));
        }
        case UNARY_TANH: {
            r = tanh_stable(v);
        }
        case UNARY_CLIP: {
            r = min(max(v, uprm.lo), uprm.hi);
        }
        case UNARY_SQRT: {
            r = sqrt(v);
        }
        case UNARY_EXP: {
            r = exp(v);
        }
        case UNARY_HARD_SIGMOID: {
            r = clamp(uprm.alpha * v + uprm.lo, 0.0, 1.0);
        }
        case UNARY_HARD_SWISH: {
            r = v * clamp(v / 6.0 + 0.5, 0.0, 1.0);
        }
        default: {}
    }
    unary_out[i - uprm.y_sub] = r;
}

@compute @workgroup_size(256)
fn binary(inv: Invocation) {
    let local = linear_index(inv);
    if local >= bprm.total {
        return;
    }
    let i = bprm.base + local;
    var ai = i;
    var bi = i;
    if !SAME_SHAPE {
        let offsets = broadcast_offsets(i, bprm.operands);
        ai = offsets.x;
        bi = offsets.y;
    }
    let a = in0[ai - bprm.a_sub];
    let b = in1[bi - bprm.b_sub];
    var r: f32;
    switch BINARY_OP {
        case BINARY_ADD: {
            r = a + b;
        }
        case BINARY_SUB: {
            r = a - b;
        }
        case BINARY_MUL: {
            r = a * b;
        }
        case BINARY_DIV: {
            r = a / b;
        }
        case BINARY_POW: {
            r = pow_signed(a, b);
        }
        // NaN propagates, as on the CPU (WGSL's max and min leave it unspecified).
        case BINARY_MAX: {
            r = select(b, a, a > b || a != a);
        }
        case BINARY_MIN: {
            r = select(b, a, a < b || a != a);
        }
        // BINARY_PRELU
        default: {
            r = select(a, a * b, a < 0.0);
        }
    }
    binary_out[i - bprm.y_sub] = r;
}

// Inference batch normalization, computed as the CPU backend does:
// factor = scale / sqrt(var + eps), y = x · factor + (bias - mean · factor).
@compute @workgroup_size(256)
fn batch_norm(inv: Invocation) {
    let local = linear_index(inv);
    if local >= nprm.total {
        return;
    }
    let i = nprm.base + local;
    let c = (i / nprm.plane) % nprm.channels;
    let factor = in1[c] / sqrt(in4[c] + nprm.epsilon);
    let shift = in2[c] - in3[c] * factor;
    norm_out[i - nprm.y_sub] = in0[i - nprm.x_sub] * factor + shift;
}
