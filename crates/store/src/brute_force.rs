//! Search without a search store: every stored facen of a model against the query facens.

use serde::Serialize;

use refacen_face::{Metric, distance};

use crate::{FaceId, FacePages, FaceStore, StoreError};

/// A stored face and its distance to a query face.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    pub id: FaceId,
    pub photo: String,
    pub distance: f32,
}

/// What a brute-force search found.
#[derive(Debug, Default)]
pub struct BruteForce {
    /// The `top` nearest per query, nearest first.
    pub hits: Vec<Vec<Hit>>,
    /// Faces compared: those holding a facen of the model.
    pub compared: u64,
    /// Faces holding a facen of another model.
    pub other_models: u64,
}

/// Compares every stored facen of the model with wasm digest `model_sha256` (lost faces left
/// out) with each query, keeping the `top` nearest per query.
pub async fn brute_force_search(
    store: &dyn FaceStore,
    model_sha256: &str,
    queries: &[Vec<f32>],
    top: usize,
    metric: Metric,
) -> Result<BruteForce, StoreError> {
    let mut found =
        BruteForce { hits: queries.iter().map(|_| Vec::new()).collect(), ..BruteForce::default() };
    let mut pages = FacePages::new(store, 1, 1024);
    while let Some(page) = pages.next_page().await? {
        for face in page.into_iter().filter(|f| !f.lost) {
            let Some(facen) = &face.facen else { continue };
            if facen.model.sha256 != model_sha256 {
                found.other_models += 1;
                continue;
            }
            found.compared += 1;
            for (query, hits) in queries.iter().zip(&mut found.hits) {
                let distance = distance(metric, query, &facen.values);
                hits.push(Hit { id: face.id, photo: face.photo.clone(), distance });
            }
        }
        // Keep memory bounded: only the best `top` per query survive each page.
        for hits in &mut found.hits {
            hits.sort_by(|a, b| a.distance.total_cmp(&b.distance));
            hits.truncate(top);
        }
    }
    Ok(found)
}
