//! Photos in and out: decoding with limits, alignment warps to normalized faces, thumbnails.

pub mod align;
mod decode;
mod heif;
pub mod sniff;
pub mod thumbnail;

pub use align::{AlignError, CANONICAL, Similarity, warp, warp_points};
pub use decode::{
    DecodeCause, DecodeError, DecodeLimits, Photo, decode_photo, decode_photo_bytes, decode_rgb,
    decode_rgb_bytes,
};
pub use sniff::PhotoFormat;
pub use thumbnail::{ThumbnailError, encode_jpeg, encode_png, thumbnail};
