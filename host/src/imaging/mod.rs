//! Photos in and out: decoding with limits, alignment warps to normalized faces, thumbnails.

pub mod align;
mod decode;
pub mod thumbnail;

pub use align::{AlignError, CANONICAL, Similarity, warp, warp_points};
pub use decode::{DecodeError, DecodeLimits, decode_rgb, decode_rgb_bytes};
pub use thumbnail::{ThumbnailError, encode_jpeg, encode_png, thumbnail};
