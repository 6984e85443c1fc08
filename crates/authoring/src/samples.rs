//! The inputs a check runs a guest on: the repository's sample photos and face chips, built
//! into the binary so that an author needs nothing but `refacen`, and synthetic odd ones that a
//! guest meets sooner or later in a real Uploads (blank, one pixel, a strip, one colour).

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use refacen_imaging::{DecodeError, DecodeLimits, decode_rgb, decode_rgb_bytes};

/// One input of a check: what the table calls it and the pixels.
pub struct Probe {
    pub name: String,
    pub image: RgbImage,
    /// Synthetic inputs may be refused with `invalid-input`; real ones must be answered.
    pub synthetic: bool,
}

macro_rules! fixtures {
    ($dir:literal: $($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("../../../tests/fixtures/faces/", $dir, "/", $name)) as &[u8])),*]
    };
}

/// The six sample photos of tests/fixtures/faces (see its README: public test images).
const PHOTOS: &[(&str, &[u8])] = fixtures!("images":
    "astronaut.png", "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg");

/// dlib's 150x150 chips of the faces in those photos: refacen's canonical normalized faces.
const CHIPS: &[(&str, &[u8])] = fixtures!("chips":
    "astronaut_0.png", "astronaut_1.png", "biden_0.png", "obama_0.png", "obama2_0.png", "obama3_0.png", "obama_partial_face_0.png");

fn decode_embedded(name: &str, bytes: &[u8]) -> RgbImage {
    decode_rgb_bytes(Path::new(name), bytes, &DecodeLimits::default())
        .unwrap_or_else(|e| panic!("the sample {name} built into refacen does not decode: {e}"))
}

/// An odd input of one colour: its name in the table, its width and height, its colour.
type OddImage = (&'static str, u32, u32, [u8; 3]);

/// Odd images a detector is run on. The pure red one has a pure red top-left pixel, as a
/// trigger image of the hostile test guest does.
const ODD_PHOTOS: &[OddImage] = &[
    ("blank 640x480 (white)", 640, 480, [255, 255, 255]),
    ("black 256x256", 256, 256, [0, 0, 0]),
    ("pure red 64x64", 64, 64, [255, 0, 0]),
    ("one pixel 1x1", 1, 1, [128, 128, 128]),
    ("strip 1000x3", 1000, 3, [200, 150, 120]),
];

/// Odd faces a model is run on: canonical 150x150 chips of one colour.
const ODD_FACES: &[OddImage] = &[
    ("black face", 150, 150, [0, 0, 0]),
    ("white face", 150, 150, [255, 255, 255]),
    ("pure red face", 150, 150, [255, 0, 0]),
];

/// The built-in samples of `real`, then the `odd` images.
fn probes(real: &[(&str, &[u8])], odd: &[OddImage]) -> Vec<Probe> {
    let real = real.iter().map(|(name, bytes)| Probe {
        name: (*name).into(),
        image: decode_embedded(name, bytes),
        synthetic: false,
    });
    let odd = odd.iter().map(|&(name, width, height, colour)| Probe {
        name: name.into(),
        image: RgbImage::from_pixel(width, height, Rgb(colour)),
        synthetic: true,
    });
    real.chain(odd).collect()
}

/// The author's own inputs (`--sample FILE`), decoded as refacen decodes photos.
pub fn own(paths: &[PathBuf]) -> Result<Vec<Probe>, (PathBuf, DecodeError)> {
    paths
        .iter()
        .map(|path| {
            let image = decode_rgb(path, &DecodeLimits::default()).map_err(|e| (path.clone(), e))?;
            Ok(Probe { name: path.display().to_string(), image, synthetic: false })
        })
        .collect()
}

/// What a detector is run on: the sample photos, then odd images.
pub fn photos() -> Vec<Probe> {
    probes(PHOTOS, ODD_PHOTOS)
}

/// What a model is run on: the sample chips (canonical 150x150 normalized faces), then odd
/// faces of one colour.
pub fn chips() -> Vec<Probe> {
    probes(CHIPS, ODD_FACES)
}
