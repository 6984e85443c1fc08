//! Face records in MongoDB, the store FindFace deployments keep them in.
//!
//! One database (`--mongo-db`), four collections:
//! - `faces`: one document per face, `_id` the face id, the fields of [`FaceRecord`], the facen
//!   as BSON Binary (f32 little-endian) beside its size and model;
//! - `photos`: one document per photo, `_id` its path relative to Uploads;
//! - `refacen_progress`: one document per shard of a run ([`super::ShardProgress`]), `_id` its key;
//! - `counters`: `{_id: "face_id", last: N, claim: {photo, count}}`: face ids handed out with
//!   an atomic `$inc` that also records which photo got them, so that a photo whose commit a
//!   crash cut short gets its ids again.
//!
//! MongoDB has no multi-document atomicity without a replica set, so a photo is committed
//! faces first, photo document last: a crash in between leaves the photo document as it was
//! and some faces written, which [`FaceStore::faces_of_photo`] finds again (by the indexed
//! `photo` field), so the rerun matches them by box and keeps their ids rather than adding
//! duplicates. Writes go in unordered batches of upserts through the plain `update` command
//! (every MongoDB version has it; `bulkWrite` needs 8.0). Transient failures (network,
//! server selection, a primary stepping down) are retried for the retry window
//! ([`super::retry`]). The driver's errors are told in one line naming the server, the user
//! and what to check ([`explain`]); the driver's own error stays their source.
//!
//! Reads in id order ask for a window of ids at a time and sort it here rather than asking
//! the server to sort: as correct on MongoDB, and also on the wire-compatible server the
//! tests run against, which sorts integers as strings.

use std::future::Future;
use std::time::Duration;

use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Serialize;

mod docs;
mod errors;

use docs::*;
use errors::*;

use super::{FaceId, FaceRecord, FaceStore, Facen, PhotoRecord, ShardProgress, StoreError};
use crate::retry::{Retrier, RetryWindow};

/// Documents per `update` command (well under MongoDB's 100000 operations and 48 MB).
const BATCH: usize = 500;
/// How long one attempt waits for a server to answer, at most.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct MongoStore {
    db: Database,
    faces: Collection<FaceDoc>,
    photos: Collection<PhotoDoc>,
    location: String,
    /// Who the client logs in as, for messages.
    login: Login,
    retrier: Retrier,
}

/// The user of a `--mongo` URI and the database that defines it.
#[derive(Clone, Debug)]
pub(super) struct Login {
    user: Option<String>,
    auth_source: String,
    database: String,
}

impl MongoStore {
    /// Connects to `uri`, checks the server answers, and creates the indexes. An unreachable
    /// server is an error within a few seconds, before any work starts. Operations are retried
    /// for the default window ([`MongoStore::connect_retrying`]).
    pub async fn connect(uri: &str, database: &str) -> Result<Self, StoreError> {
        Self::connect_retrying(uri, database, RetryWindow::DEFAULT).await
    }

    /// [`MongoStore::connect`], with operations on a server that stops answering retried for
    /// `retry`.
    pub async fn connect_retrying(uri: &str, database: &str, retry: RetryWindow) -> Result<Self, StoreError> {
        let location = format!("mongodb {} (database {database})", redact(uri));
        let mut options = ClientOptions::parse(uri).await.map_err(|e| StoreError::Driver {
            location: location.clone(),
            message: format!("bad --mongo URI: {}", one_line(&e)),
            source: Box::new(e),
        })?;
        // An attempt never outlasts the window by more than itself: short windows, short attempts.
        let attempt = ATTEMPT_TIMEOUT.min(retry.0).max(Duration::from_secs(1));
        options.server_selection_timeout.get_or_insert(attempt);
        options.connect_timeout.get_or_insert(attempt);
        options.app_name.get_or_insert("refacen".into());
        let login = Login {
            user: options.credential.as_ref().and_then(|c| c.username.clone()),
            auth_source: options
                .credential
                .as_ref()
                .and_then(|c| c.source.clone())
                .or_else(|| options.default_database.clone())
                .unwrap_or_else(|| "admin".into()),
            database: database.to_string(),
        };
        let client = Client::with_options(options).map_err(|e| StoreError::Driver {
            location: location.clone(),
            message: one_line(&e),
            source: Box::new(e),
        })?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 }).await.map_err(|e| StoreError::Driver {
            location: location.clone(),
            message: explain(&e, &login),
            source: Box::new(e),
        })?;
        let retrier = Retrier::new(location.clone(), retry);
        let store = MongoStore {
            faces: db.collection("faces"),
            photos: db.collection("photos"),
            db,
            location,
            login,
            retrier,
        };
        store
            .retry("creating indexes", || async {
                store.faces.create_index(IndexModel::builder().keys(doc! { "photo": 1 }).build()).await?;
                store
                    .faces
                    .create_index(IndexModel::builder().keys(doc! { "search_pending": 1, "_id": 1 }).build())
                    .await?;
                Ok(())
            })
            .await?;
        Ok(store)
    }

    /// Runs `op` until it succeeds, fails for good, or its server has not answered for the
    /// retry window.
    async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = mongodb::error::Result<T>>,
    {
        let transient = |e: &mongodb::error::Error| transient(e).then(|| short_cause(e));
        self.retrier.run(op, transient).await.map_err(|gave_up| {
            let message =
                format!("{what}: {}{}", explain(&gave_up.error, &self.login), gave_up.retried_text());
            StoreError::Driver { location: self.location.clone(), message, source: Box::new(gave_up.error) }
        })
    }

    /// Upserts `docs` by `_id` in unordered batches, each retried on its own. A document is
    /// updated field by field, never replaced: the fields of `owned` (refacen's) that `docs`
    /// has are `$set`, those it lacks `$unset`, and every other field (an application's) stays.
    async fn upsert_all<T: Serialize>(
        &self,
        collection: &str,
        owned: &[&str],
        docs: &[(Bson, T)],
    ) -> Result<(), StoreError> {
        for chunk in docs.chunks(BATCH) {
            let updates: Vec<Document> = chunk
                .iter()
                .map(|(id, d)| {
                    let fields = bson::to_document(d).map_err(|e| self.corrupt(id, e))?;
                    Ok(doc! { "q": { "_id": id.clone() }, "u": owned_fields_update(fields, owned), "upsert": true })
                })
                .collect::<Result<_, StoreError>>()?;
            let command = doc! { "update": collection, "updates": updates, "ordered": false };
            self.write_command(&format!("writing {} {collection}", chunk.len()), command).await?;
        }
        Ok(())
    }

    /// Runs a write command, retried while its failure is transient; write errors it reports
    /// (a rejected document) fail it.
    async fn write_command(&self, what: &str, command: Document) -> Result<(), StoreError> {
        let reply = self.retry(what, || async { self.db.run_command(command.clone()).await }).await?;
        match reply.get_array("writeErrors") {
            Ok(errors) if !errors.is_empty() => Err(StoreError::Backend {
                location: self.location.clone(),
                message: format!("{what}: the server refused {} of them: {}", errors.len(), errors[0]),
            }),
            _ => Ok(()),
        }
    }

    /// The faces matching `filter` (at most `limit`, any of them), in id order.
    async fn find_faces(&self, filter: Document, limit: Option<i64>) -> Result<Vec<FaceRecord>, StoreError> {
        let docs = self
            .retry("reading faces", || async {
                let mut find = self.faces.find(filter.clone());
                if let Some(limit) = limit {
                    find = find.limit(limit);
                }
                let mut cursor = find.await?;
                let mut docs = Vec::new();
                while cursor.advance().await? {
                    docs.push(cursor.deserialize_current()?);
                }
                Ok(docs)
            })
            .await?;
        let mut faces: Vec<FaceRecord> =
            docs.into_iter().map(|d: FaceDoc| d.into_record(&self.location)).collect::<Result<_, _>>()?;
        faces.sort_by_key(|f| f.id);
        Ok(faces)
    }

    /// The last face id handed out (0 before the first).
    async fn last_id(&self) -> Result<FaceId, StoreError> {
        let counters: Collection<Document> = self.db.collection("counters");
        let found = self
            .retry("reading the id counter", || async { counters.find_one(doc! { "_id": "face_id" }).await })
            .await?;
        match found {
            None => Ok(0),
            Some(counter) => self.counter_value(&counter),
        }
    }

    fn counter_value(&self, counter: &Document) -> Result<FaceId, StoreError> {
        // Servers may answer the sum as any integer width (or a double, for JavaScript clients).
        Ok(match counter.get("last") {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Double(n)) if n.fract() == 0.0 => *n as i64,
            other => {
                return Err(self.corrupt("counters/face_id", format!("`last` is {other:?}, not an integer")));
            }
        } as FaceId)
    }

    fn corrupt(&self, key: impl std::fmt::Display, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { location: self.location.clone(), key: key.to_string(), message: e.to_string() }
    }
}

impl MongoStore {
    /// All documents of `collection` matching `filter`, decoded.
    async fn find_all<T: serde::de::DeserializeOwned + Send + Sync>(
        &self,
        what: &str,
        collection: &str,
        filter: Document,
        sort_limit: Option<(Document, i64)>,
    ) -> Result<Vec<T>, StoreError> {
        let collection: Collection<T> = self.db.collection(collection);
        self.retry(what, || async {
            let mut find = collection.find(filter.clone());
            if let Some((sort, limit)) = &sort_limit {
                find = find.sort(sort.clone()).limit(*limit);
            }
            let mut cursor = find.await?;
            let mut docs = Vec::new();
            while cursor.advance().await? {
                docs.push(cursor.deserialize_current()?);
            }
            Ok(docs)
        })
        .await
    }
}

#[async_trait::async_trait]
impl FaceStore for MongoStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn photo(&self, path: &str) -> Result<Option<PhotoRecord>, StoreError> {
        let found = self
            .retry("reading a photo", || async { self.photos.find_one(doc! { "_id": path }).await })
            .await?;
        Ok(found.map(PhotoDoc::into_record))
    }

    async fn faces(&self, ids: &[FaceId]) -> Result<Vec<FaceRecord>, StoreError> {
        let mut faces = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            faces.extend(self.find_faces(doc! { "_id": { "$in": ids_bson(chunk) } }, None).await?);
        }
        faces.sort_by_key(|f| f.id);
        Ok(faces)
    }

    async fn faces_of_photo(&self, path: &str) -> Result<Vec<FaceRecord>, StoreError> {
        self.find_faces(doc! { "photo": path }, None).await
    }

    async fn allocate_ids(&self, photo: &str, count: usize) -> Result<Vec<FaceId>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let counters: Collection<Document> = self.db.collection("counters");
        let current = self
            .retry("reading the id counter", || async { counters.find_one(doc! { "_id": "face_id" }).await })
            .await?;
        // The last reservation was for this photo: its ids no face took are its again.
        if let Some(counter) = &current
            && counter.get_document("claim").is_ok_and(|c| c.get_str("photo") == Ok(photo))
        {
            let last = self.counter_value(counter)?;
            let claimed = counter.get_document("claim").ok().and_then(claim_count).unwrap_or(0);
            let ids: Vec<FaceId> = (last + 1 - claimed.min(last)..=last).collect();
            let taken: Vec<FaceId> = self.faces(&ids).await?.iter().map(|f| f.id).collect();
            let unused: Vec<FaceId> = ids.into_iter().filter(|id| !taken.contains(id)).collect();
            if unused.len() == count {
                return Ok(unused);
            }
        }
        let after = self
            .retry("reserving face ids", || async {
                counters
                    .find_one_and_update(
                        doc! { "_id": "face_id" },
                        doc! {
                            "$inc": { "last": count as i64 },
                            "$set": { "claim": { "photo": photo, "count": count as i64 } },
                        },
                    )
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .await
            })
            .await?
            .ok_or_else(|| {
                self.corrupt("counters/face_id", "the id counter vanished while it was incremented")
            })?;
        let last = self.counter_value(&after)?;
        Ok((last + 1 - count as FaceId..=last).collect())
    }

    async fn commit_photo(&self, photo: PhotoRecord, faces: Vec<FaceRecord>) -> Result<(), StoreError> {
        let docs: Vec<(Bson, FaceDoc)> = faces.iter().map(|f| (id_bson(f.id), FaceDoc::new(f))).collect();
        self.upsert_all("faces", FACE_FIELDS, &docs).await?;
        let photo_doc = PhotoDoc {
            orientation: photo.orientation,
            faces: photo.faces.iter().map(|&id| id as i64).collect(),
            sha256: photo.sha256,
            detector: photo.detector,
            outputs: photo.outputs,
            detected_at: photo.detected_at,
            path: photo.path,
        };
        self.upsert_all("photos", PHOTO_FIELDS, &[(Bson::String(photo_doc.path.clone()), photo_doc)]).await
    }

    async fn set_facens(&self, facens: Vec<(FaceId, Facen)>, search_pending: bool) -> Result<(), StoreError> {
        for chunk in facens.chunks(BATCH) {
            let updates: Vec<Document> = chunk
                .iter()
                .map(|(id, facen)| {
                    let facen = bson::to_bson(&FacenDoc::new(facen)).map_err(|e| self.corrupt(id, e))?;
                    Ok(doc! {
                        "q": { "_id": id_bson(*id) },
                        "u": { "$set": { "facen": facen, "search_pending": search_pending } },
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            let command = doc! { "update": "faces", "updates": updates, "ordered": false };
            self.write_command(&format!("writing {} facens", chunk.len()), command).await?;
        }
        Ok(())
    }

    async fn scan_faces(&self, from: FaceId, limit: usize) -> Result<Vec<FaceRecord>, StoreError> {
        // Windows of `limit` ids from `from` to the last id: the first with a face is the page.
        let end = self.last_id().await?;
        let window = limit.max(1) as FaceId;
        let mut start = from;
        while start <= end {
            let window_end = start.saturating_add(window - 1).min(end);
            let filter = doc! { "_id": { "$gte": start as i64, "$lte": window_end as i64 } };
            let faces = self.find_faces(filter, None).await?;
            if !faces.is_empty() || window_end == end {
                return Ok(faces);
            }
            start = window_end + 1;
        }
        Ok(Vec::new())
    }

    async fn search_pending(&self, limit: usize) -> Result<Vec<FaceRecord>, StoreError> {
        self.find_faces(doc! { "search_pending": true }, Some(limit as i64)).await
    }

    async fn scan_photos(&self, after: Option<&str>, limit: usize) -> Result<Vec<PhotoRecord>, StoreError> {
        let filter = after.map_or_else(Document::new, |after| doc! { "_id": { "$gt": after } });
        let docs: Vec<PhotoDoc> = self
            .find_all("reading photos", "photos", filter, Some((doc! { "_id": 1 }, limit as i64)))
            .await?;
        let mut photos: Vec<PhotoRecord> = docs.into_iter().map(PhotoDoc::into_record).collect();
        photos.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(photos)
    }

    async fn put_shard_progress(&self, progress: &ShardProgress) -> Result<(), StoreError> {
        let key = Bson::String(progress.key.clone());
        let doc = ProgressDoc { key: progress.key.clone(), progress: progress.clone() };
        // The whole document is refacen's: every field it has is owned.
        let fields = bson::to_document(&doc).map_err(|e| self.corrupt(&key, e))?;
        let owned: Vec<&str> = fields.keys().map(String::as_str).filter(|k| *k != "_id").collect();
        self.upsert_all(PROGRESS, &owned, &[(key.clone(), doc)]).await
    }

    async fn shard_progress(&self, key: &str) -> Result<Option<ShardProgress>, StoreError> {
        let docs: Vec<ProgressDoc> =
            self.find_all("reading a shard's progress", PROGRESS, doc! { "_id": key }, None).await?;
        Ok(docs.into_iter().next().map(|d| d.progress))
    }

    async fn all_shard_progress(&self) -> Result<Vec<ShardProgress>, StoreError> {
        let docs: Vec<ProgressDoc> =
            self.find_all("reading the shards' progress", PROGRESS, Document::new(), None).await?;
        let mut all: Vec<ShardProgress> = docs.into_iter().map(|d| d.progress).collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    async fn clear_search_pending(&self, ids: &[FaceId]) -> Result<(), StoreError> {
        for chunk in ids.chunks(BATCH) {
            let command = doc! {
                "update": "faces",
                "updates": [{
                    "q": { "_id": { "$in": ids_bson(chunk) } },
                    "u": { "$set": { "search_pending": false } },
                    "multi": true,
                }],
            };
            self.write_command("marking faces as copied to the search store", command).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DetectorProvenance, ModelProvenance};

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("mongodb://app:s3cret@db.example:27017/?tls=true"),
            "mongodb://app:***@db.example:27017/?tls=true"
        );
        assert_eq!(redact("mongodb://127.0.0.1:27018"), "mongodb://127.0.0.1:27018");
    }

    fn detector() -> DetectorProvenance {
        DetectorProvenance {
            name: "d".into(),
            version: "1".into(),
            sha256: "00".into(),
            params: Default::default(),
        }
    }

    fn face(orientation: Option<u8>) -> FaceDoc {
        let model =
            ModelProvenance { name: "m".into(), version: "1".into(), sha256: "00".into(), facen_size: 1 };
        let facen = Facen { values: vec![1.0], model, at: 2 };
        FaceDoc::new(&FaceRecord {
            id: 7,
            photo: "a.jpg".into(),
            orientation,
            bbox: [0.0; 4],
            score: 1.0,
            landmarks: [[0.0; 2]; 5],
            normalized: Some("n.png".into()),
            thumbnail: Some("t.jpg".into()),
            facen: Some(facen),
            lost: false,
            detector: detector(),
            detected_at: 1,
            search_pending: true,
        })
    }

    fn keys(d: &Document) -> Vec<&str> {
        let mut keys: Vec<&str> = d.keys().map(String::as_str).collect();
        keys.sort();
        keys
    }

    fn sorted<'a>(fields: &[&'a str]) -> Vec<&'a str> {
        let mut fields = fields.to_vec();
        fields.sort();
        fields
    }

    /// Every field a face or photo document gets is one refacen lists as its own, so that no
    /// write ever touches a field it does not list, and a field dropped is unset.
    #[test]
    fn writes_set_exactly_refacens_fields_and_unset_the_absent_ones() {
        let full = owned_fields_update(bson::to_document(&face(Some(6))).unwrap(), FACE_FIELDS);
        assert_eq!(keys(&full), ["$set"], "nothing to unset, no replacement: {full}");
        assert_eq!(keys(full.get_document("$set").unwrap()), sorted(FACE_FIELDS));

        let upright = owned_fields_update(bson::to_document(&face(None)).unwrap(), FACE_FIELDS);
        assert_eq!(keys(upright.get_document("$unset").unwrap()), ["orientation"]);
        assert!(!upright.get_document("$set").unwrap().contains_key("orientation"));

        let photo = PhotoDoc {
            path: "a.jpg".into(),
            orientation: Some(1),
            sha256: "00".into(),
            faces: vec![7],
            detector: detector(),
            outputs: vec![],
            detected_at: 1,
        };
        let update = owned_fields_update(bson::to_document(&photo).unwrap(), PHOTO_FIELDS);
        assert_eq!(keys(update.get_document("$set").unwrap()), sorted(PHOTO_FIELDS), "_id is the filter's");
    }
}
