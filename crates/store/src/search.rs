//! The search store: copies of facens where `search` looks, one space per model (Tarantool).
//!
//! The face store stays the source of truth. A record written while a search store is
//! configured carries `search_pending` until its copy is in place, so a run that stops in
//! between (a kill, the search store down) leaves a trail the next run follows
//! ([`SearchCopier::catch_up`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{FaceId, FaceRecord, FaceStore, StoreError};

/// What copying facens needs of a search store.
#[async_trait::async_trait]
pub trait SearchStore: Send + Sync {
    /// Where it is, for messages.
    fn location(&self) -> String;

    /// The space for facens of `model_name` with `facen_size` values, created where missing.
    /// The first space of a search store becomes the active one (search answers from it);
    /// later ones wait for `sync-search --activate`.
    async fn ensure_space(&self, model_name: &str, facen_size: u32) -> Result<String, StoreError>;

    /// Writes (replaces) facens in `space`.
    async fn put(&self, space: &str, facens: &[(FaceId, Vec<f32>)]) -> Result<(), StoreError>;

    /// Removes faces from `space`; absent ones are no error.
    async fn remove(&self, space: &str, ids: &[FaceId]) -> Result<(), StoreError>;
}

#[async_trait::async_trait]
#[cfg(feature = "tarantool")]
impl SearchStore for super::tarantool::TarantoolStore {
    fn location(&self) -> String {
        self.location()
    }

    async fn ensure_space(&self, model_name: &str, facen_size: u32) -> Result<String, StoreError> {
        let space = self.ensure_space(model_name, facen_size).await?;
        if self.active_space().await?.is_none() {
            self.activate(&space).await?;
        }
        Ok(space)
    }

    async fn put(&self, space: &str, facens: &[(FaceId, Vec<f32>)]) -> Result<(), StoreError> {
        self.put(space, facens).await
    }

    async fn remove(&self, space: &str, ids: &[FaceId]) -> Result<(), StoreError> {
        self.remove(space, ids).await
    }
}

/// Facens copied into and faces removed from the search store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, derive_more::AddAssign)]
pub struct Copied {
    pub facens: u64,
    pub removed: u64,
}

/// Keeps a search store's copies of face records current.
pub struct SearchCopier {
    search: Arc<dyn SearchStore>,
    /// Spaces already made sure of, by model name and facen size.
    spaces: Mutex<HashMap<(String, u32), String>>,
}

impl SearchCopier {
    pub fn new(search: Arc<dyn SearchStore>) -> Self {
        SearchCopier { search, spaces: Mutex::new(HashMap::new()) }
    }

    pub fn location(&self) -> String {
        self.search.location()
    }

    async fn space(&self, model_name: &str, facen_size: u32) -> Result<String, StoreError> {
        let key = (model_name.to_string(), facen_size);
        if let Some(space) = self.spaces.lock().expect("space cache").get(&key) {
            return Ok(space.clone());
        }
        let space = self.search.ensure_space(model_name, facen_size).await?;
        self.spaces.lock().expect("space cache").insert(key, space.clone());
        Ok(space)
    }

    /// Brings the copies of `faces` up to date: the facen of a face that is not lost goes into
    /// its model's space, a lost face leaves it. Faces without a facen have no copy.
    pub async fn copy(&self, faces: &[FaceRecord]) -> Result<Copied, StoreError> {
        let mut puts: BTreeMap<String, Vec<(FaceId, Vec<f32>)>> = BTreeMap::new();
        let mut removals: BTreeMap<String, Vec<FaceId>> = BTreeMap::new();
        for face in faces {
            let Some(facen) = &face.facen else { continue };
            let space = self.space(&facen.model.name, facen.values.len() as u32).await?;
            if face.lost {
                removals.entry(space).or_default().push(face.id);
            } else {
                puts.entry(space).or_default().push((face.id, facen.values.clone()));
            }
        }
        let mut copied = Copied::default();
        for (space, facens) in puts {
            self.search.put(&space, &facens).await?;
            copied.facens += facens.len() as u64;
        }
        for (space, ids) in removals {
            self.search.remove(&space, &ids).await?;
            copied.removed += ids.len() as u64;
        }
        Ok(copied)
    }

    /// [`SearchCopier::copy`], then clears the faces' `search_pending` in `store`.
    pub async fn copy_and_clear(
        &self,
        store: &dyn FaceStore,
        faces: &[FaceRecord],
    ) -> Result<Copied, StoreError> {
        let copied = self.copy(faces).await?;
        let ids: Vec<FaceId> = faces.iter().map(|f| f.id).collect();
        store.clear_search_pending(&ids).await?;
        Ok(copied)
    }

    /// Copies every face of `store` whose copy may be stale (an earlier run stopped between
    /// the two stores). Each page's marks are cleared before the next is asked for.
    pub async fn catch_up(&self, store: &dyn FaceStore) -> Result<Copied, StoreError> {
        const PAGE: usize = 500;
        let mut copied = Copied::default();
        loop {
            let faces = store.search_pending(PAGE).await?;
            if faces.is_empty() {
                break;
            }
            copied += self.copy_and_clear(store, &faces).await?;
        }
        Ok(copied)
    }
}
