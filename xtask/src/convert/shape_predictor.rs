//! dlib's shape predictor (`shape_predictor_5_face_landmarks.dat`: an ensemble of regression
//! trees, Kazemi & Sullivan 2014) as a flat little-endian file the `dlib` guest reads without
//! dlib's serialization code (guests/dlib/src/shape.rs reads it).
//!
//! dlib writes `shape_predictor` as (dlib/image_processing/shape_predictor.h): version (int, 1),
//! `initial_shape` (matrix<float,0,1>: -rows, -cols, then the values), `forests`
//! (vector<vector<regression_tree>>, a tree being `splits`, a vector of (idx1, idx2: unsigned
//! long, thresh: float), and `leaf_values`, a vector of matrix<float,0,1>), `anchor_idx`
//! (vector<vector<unsigned long>>) and `deltas` (vector<vector<vector<float,2>>>).
//!
//! The output (`RSP1`), every number u32 or f32, little-endian:
//!
//! ```text
//! "RSP1" parts cascades trees splits features
//! initial_shape: 2·parts f32 (x0 y0 x1 y1 ...)
//! per cascade: anchor: features u32, deltas: 2·features f32,
//!              per tree: splits × (idx1 u32, idx2 u32, thresh f32), (splits + 1) × 2·parts f32
//! ```
//!
//! All trees must have the same depth and all cascades the same feature count (dlib's
//! trainer makes them so); anything else is refused.

use anyhow::{Context, Result, ensure};

use super::dlib::Reader;

pub const MAGIC: &[u8; 4] = b"RSP1";

/// Converts a serialized dlib `shape_predictor` into the `RSP1` format.
pub fn convert(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut r = Reader::new(bytes);
    let out =
        read(&mut r).with_context(|| format!("malformed shape predictor at byte offset {}", r.position()))?;
    ensure!(
        r.position() == bytes.len(),
        "{} bytes remain after the shape predictor",
        bytes.len() - r.position()
    );
    Ok(out)
}

fn read(r: &mut Reader) -> Result<Vec<u8>> {
    let version = r.int()?;
    ensure!(version == 1, "shape_predictor version {version}, expected 1");
    let initial = r.float_column().context("initial_shape")?;
    ensure!(!initial.is_empty() && initial.len() % 2 == 0, "initial_shape has {} values", initial.len());
    let parts = initial.len() / 2;

    let cascades = r.usize()?;
    ensure!((1..=100).contains(&cascades), "implausible cascade count {cascades}");
    let mut forests = Vec::with_capacity(cascades);
    let mut shape: Option<(usize, usize)> = None; // (trees, splits)
    for c in 0..cascades {
        let trees = r.usize()?;
        ensure!((1..=10_000).contains(&trees), "cascade {c}: implausible tree count {trees}");
        let mut forest = Vec::with_capacity(trees);
        for t in 0..trees {
            let splits = r.usize()?;
            ensure!(splits < 1 << 12, "cascade {c} tree {t}: implausible split count {splits}");
            let mut split_values = Vec::with_capacity(splits);
            for _ in 0..splits {
                let idx1 = u32::try_from(r.usize()?)?;
                let idx2 = u32::try_from(r.usize()?)?;
                split_values.push((idx1, idx2, r.f32()?));
            }
            let leaves = r.usize()?;
            ensure!(leaves == splits + 1, "cascade {c} tree {t}: {leaves} leaves for {splits} splits");
            let mut leaf_values = Vec::with_capacity(leaves * 2 * parts);
            for _ in 0..leaves {
                let leaf = r.float_column()?;
                ensure!(leaf.len() == 2 * parts, "cascade {c} tree {t}: a leaf of {} values", leaf.len());
                leaf_values.extend(leaf);
            }
            let this = (trees, splits);
            ensure!(shape.is_none_or(|s| s == this), "cascade {c} tree {t}: trees differ in size or count");
            shape = Some(this);
            forest.push((split_values, leaf_values));
        }
        forests.push(forest);
    }
    let anchors = read_vectors(r, cascades, |r| Ok(u32::try_from(r.usize()?)?)).context("anchor_idx")?;
    let deltas = read_vectors(r, cascades, |r| Ok([r.f32()?, r.f32()?])).context("deltas")?;
    let features = anchors[0].len();
    for (c, (a, d)) in anchors.iter().zip(&deltas).enumerate() {
        ensure!(a.len() == features && d.len() == features, "cascade {c}: feature counts differ");
        ensure!(a.iter().all(|&i| (i as usize) < parts), "cascade {c}: an anchor beyond the shape's parts");
    }
    let (trees, splits) = shape.context("no trees")?;
    for forest in &forests {
        for (split_values, _) in forest {
            ensure!(
                split_values.iter().all(|&(a, b, _)| (a as usize) < features && (b as usize) < features),
                "a split reads a feature beyond the cascade's {features}"
            );
        }
    }

    let mut out = Vec::new();
    out.extend(MAGIC);
    for n in [parts, cascades, trees, splits, features] {
        out.extend(u32::try_from(n)?.to_le_bytes());
    }
    let f32s = |out: &mut Vec<u8>, values: &[f32]| values.iter().for_each(|v| out.extend(v.to_le_bytes()));
    f32s(&mut out, &initial);
    for ((forest, anchor), delta) in forests.iter().zip(&anchors).zip(&deltas) {
        anchor.iter().for_each(|a| out.extend(a.to_le_bytes()));
        delta.iter().for_each(|d| f32s(&mut out, d));
        for (split_values, leaf_values) in forest {
            for &(a, b, thresh) in split_values {
                out.extend(a.to_le_bytes());
                out.extend(b.to_le_bytes());
                out.extend(thresh.to_le_bytes());
            }
            f32s(&mut out, leaf_values);
        }
    }
    Ok(out)
}

/// A `vector<vector<T>>` of `outer` vectors.
fn read_vectors<T>(
    r: &mut Reader,
    outer: usize,
    item: impl Fn(&mut Reader) -> Result<T>,
) -> Result<Vec<Vec<T>>> {
    let n = r.usize()?;
    ensure!(n == outer, "{n} entries, expected one per cascade ({outer})");
    (0..n)
        .map(|_| {
            let len = r.usize()?;
            ensure!(len <= 1 << 16, "implausible length {len}");
            (0..len).map(|_| item(r)).collect()
        })
        .collect()
}
