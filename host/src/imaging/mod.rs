//! Photos in and out: decoding with limits (and later alignment warps and thumbnails).

mod decode;

pub use decode::{DecodeError, DecodeLimits, decode_rgb};
