//! `hostile-embedder`: a test model that misbehaves on purpose, to check that the host
//! contains it. An embedder takes no parameters, so the face says what to do: a face whose
//! top-left pixel is pure red (255, 0, 0) triggers the mode numbered by the red value of the
//! pixel to its right (`MODES[i]`). Other faces get an honest 8-value facen (the mean colour
//! of each image half, with grey), L2-normalized.

use std::sync::Mutex;

use kit::embedder::{EmbedderInfo, Guest, GuestError, Image};

struct HostileEmbedder;

kit::export_embedder!(HostileEmbedder);

const SIZE: u32 = 150;
const FACEN_SIZE: usize = 8;

/// What a trigger face makes the guest do, by the red value of its pixel (1, 0).
pub const MODES: &[&str] = &[
    "nan",        // a facen with a NaN
    "infinity",   // a facen with +inf
    "wrong-size", // a facen one value too long
    "extra",      // one facen more than faces
    "missing",    // one facen fewer than faces
    "loop",       // spin forever
    "alloc",      // allocate memory without bound
    "trap",       // execute `unreachable`
];

static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn honest(face: &Image) -> Vec<f32> {
    let w = face.width as usize;
    let mut sums = [0f64; FACEN_SIZE];
    let mut counts = [0usize; 2];
    for (i, px) in face.rgb.chunks_exact(3).enumerate() {
        let half = usize::from(i % w >= w / 2);
        let (r, g, b) = (px[0] as f64, px[1] as f64, px[2] as f64);
        for (k, v) in [r, g, b, 0.299 * r + 0.587 * g + 0.114 * b].into_iter().enumerate() {
            sums[4 * half + k] += v;
        }
        counts[half] += 1;
    }
    let means: Vec<f64> = sums.iter().enumerate().map(|(i, s)| s / counts[i / 4].max(1) as f64).collect();
    let norm = means.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-9);
    means.iter().map(|v| (v / norm) as f32).collect()
}

fn mode(face: &Image) -> Option<&'static str> {
    let trigger = face.rgb.get(..3) == Some(&[255, 0, 0]);
    trigger.then(|| face.rgb.get(3).and_then(|&i| MODES.get(i as usize).copied()).unwrap_or("nan"))
}

impl Guest for HostileEmbedder {
    fn info() -> EmbedderInfo {
        EmbedderInfo {
            name: "hostile-embedder".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test model that misbehaves on purpose on faces whose top-left pixel is pure red"
                .into(),
            facen_size: FACEN_SIZE as u32,
            template: kit::canonical_template(),
        }
    }

    fn embed(faces: Vec<Image>) -> Result<Vec<Vec<f32>>, GuestError> {
        let mut facens = Vec::with_capacity(faces.len());
        for (i, face) in faces.iter().enumerate() {
            kit::check_face(i, face, SIZE, SIZE)?;
            let mut facen = honest(face);
            match mode(face) {
                Some("nan") => facen[0] = f32::NAN,
                Some("infinity") => facen[1] = f32::INFINITY,
                Some("wrong-size") => facen.push(0.0),
                Some("extra") => facens.push(facen.clone()),
                Some("missing") => continue,
                Some("loop") => loop {
                    std::hint::spin_loop();
                },
                Some("alloc") => loop {
                    HOARD.lock().unwrap().push(vec![1u8; 16 << 20]);
                },
                Some("trap") => std::process::abort(),
                _ => {}
            }
            facens.push(facen);
        }
        Ok(facens)
    }
}
