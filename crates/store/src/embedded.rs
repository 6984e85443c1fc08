//! The store used when no database is configured: one redb file (a crash-safe, ACID
//! embedded key-value store in pure Rust), records encoded as CBOR.
//!
//! redb writes are short and local, so they run directly on the calling task.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{FaceId, FaceRecord, FaceStore, Facen, PhotoRecord, ShardProgress, StoreError};

const FACES: TableDefinition<u64, &[u8]> = TableDefinition::new("faces");
const PHOTOS: TableDefinition<&str, &[u8]> = TableDefinition::new("photos");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The last id reservation (`LAST`), until the commit it was made for.
const RESERVATION: TableDefinition<&str, &[u8]> = TableDefinition::new("reservation");
const LAST: &str = "last";
/// The ids of faces with `search_pending` set: an index of that flag.
const SEARCH_PENDING: TableDefinition<u64, ()> = TableDefinition::new("search_pending");
/// Progress documents of runs ([`ShardProgress`]), by key.
const SHARDS: TableDefinition<&str, &[u8]> = TableDefinition::new("shards");

const NEXT_FACE_ID: &str = "next_face_id";
const SCHEMA_VERSION: &str = "schema_version";
const SCHEMA: u64 = 1;

pub struct EmbeddedStore {
    db: Database,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| backend(path, e))?;
        }
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch) => {
                return Err(StoreError::InUse { store: path.to_path_buf(), holder: Holder::read(path) });
            }
            Err(e) => return Err(backend(path, e)),
        };
        // Only a message depends on it: a store that cannot say who holds it still works.
        let _ = Holder::this_process().write(path);
        let store = EmbeddedStore { db, path: path.to_path_buf() };
        store.write(|txn| {
            txn.open_table(FACES)?;
            txn.open_table(PHOTOS)?;
            txn.open_table(SEARCH_PENDING)?;
            txn.open_table(RESERVATION)?;
            txn.open_table(SHARDS)?;
            let mut meta = txn.open_table(META)?;
            let version = meta.get(SCHEMA_VERSION)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert(SCHEMA_VERSION, SCHEMA)?;
                    meta.insert(NEXT_FACE_ID, 1)?;
                }
                Some(SCHEMA) => {}
                Some(other) => {
                    return Err(redb::Error::Corrupted(format!(
                        "schema version {other}, this refacen reads version {SCHEMA}"
                    )));
                }
            }
            Ok(())
        })?;
        Ok(store)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let run = || -> Result<T, redb::Error> {
            let txn = self.db.begin_write()?;
            let value = f(&txn)?;
            txn.commit()?;
            Ok(value)
        };
        run().map_err(|e| backend(&self.path, e))
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(|e| backend(&self.path, e))?;
        f(&txn)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        key: impl std::fmt::Display,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        ciborium::from_reader(bytes).map_err(|e| StoreError::Corrupt {
            location: self.location(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    /// The record stored under `key` in `table`, if any.
    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(table).map_err(|e| backend(&self.path, e))?;
            match table.get(key).map_err(|e| backend(&self.path, e))? {
                Some(bytes) => Ok(Some(self.decode(key, bytes.value())?)),
                None => Ok(None),
            }
        })
    }
}

/// The refacen that has a store file open, as it wrote itself down beside the file
/// (`<store>.holder`) once it held the file's lock, for the message another one gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The subcommand, e.g. `regenerate`.
    pub command: String,
    /// Unix time (seconds) it opened the store.
    pub since: i64,
}

impl Holder {
    fn this_process() -> Holder {
        let command = std::env::args().nth(1).filter(|a| !a.starts_with('-')).unwrap_or_default();
        Holder { pid: std::process::id(), command, since: unix_now() }
    }

    fn file(store: &Path) -> PathBuf {
        let mut name = store.as_os_str().to_owned();
        name.push(".holder");
        PathBuf::from(name)
    }

    fn write(&self, store: &Path) -> std::io::Result<()> {
        std::fs::write(Self::file(store), format!("{} {} {}\n", self.pid, self.since, self.command))
    }

    /// Who holds `store` now, if that can be told: the process its holder file names, when it
    /// is still running (the file of one that ended stays behind).
    fn read(store: &Path) -> Option<Holder> {
        let text = std::fs::read_to_string(Self::file(store)).ok()?;
        let mut fields = text.trim().splitn(3, ' ');
        let pid: u32 = fields.next()?.parse().ok()?;
        let since: i64 = fields.next()?.parse().ok()?;
        let command = fields.next().unwrap_or_default().to_string();
        let holder = Holder { pid, command, since };
        holder.is_running().then_some(holder)
    }

    fn is_running(&self) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else { return false };
        // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
        let status = unsafe { libc::kill(pid, 0) };
        status == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let command = if self.command.is_empty() { String::new() } else { format!(" {}", self.command) };
        let minutes = (unix_now() - self.since).max(0) / 60;
        write!(f, "`refacen{command}`, pid {}, running for {minutes} min", self.pid)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).expect("records always encode");
    bytes
}

fn backend(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    let e = e.into();
    StoreError::Driver { location: path.display().to_string(), message: e.to_string(), source: Box::new(e) }
}

#[async_trait::async_trait]
impl FaceStore for EmbeddedStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn photo(&self, path: &str) -> Result<Option<PhotoRecord>, StoreError> {
        self.get(PHOTOS, path)
    }

    async fn faces(&self, ids: &[FaceId]) -> Result<Vec<FaceRecord>, StoreError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.read(|txn| {
            let table = txn.open_table(FACES).map_err(|e| backend(&self.path, e))?;
            let mut faces = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(bytes) = table.get(id).map_err(|e| backend(&self.path, e))? {
                    faces.push(self.decode(id, bytes.value())?);
                }
            }
            Ok(faces)
        })
    }

    async fn allocate_ids(&self, photo: &str, count: usize) -> Result<Vec<FaceId>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        self.write(|txn| {
            let mut reservations = txn.open_table(RESERVATION)?;
            let last: Option<Reservation> =
                reservations.get(LAST)?.and_then(|r| ciborium::from_reader(r.value()).ok());
            // Its photo was never committed (a commit removes it): none of its ids is in use.
            if let Some(r) = last.filter(|r| r.photo == photo && r.count == count as u64) {
                return Ok((r.first..r.first + r.count).collect());
            }
            let mut meta = txn.open_table(META)?;
            let next = meta.get(NEXT_FACE_ID)?.map_or(1, |v| v.value());
            meta.insert(NEXT_FACE_ID, next + count as u64)?;
            let reservation = Reservation { photo: photo.to_string(), first: next, count: count as u64 };
            reservations.insert(LAST, encode(&reservation).as_slice())?;
            Ok((next..next + count as u64).collect())
        })
    }

    async fn faces_of_photo(&self, path: &str) -> Result<Vec<FaceRecord>, StoreError> {
        // Photo and faces commit in one transaction: the photo's list is complete.
        match self.photo(path).await? {
            Some(photo) => self.faces(&photo.faces).await,
            None => Ok(Vec::new()),
        }
    }

    async fn commit_photo(&self, photo: PhotoRecord, faces: Vec<FaceRecord>) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(FACES)?;
            let mut pending = txn.open_table(SEARCH_PENDING)?;
            for face in &faces {
                table.insert(face.id, encode(face).as_slice())?;
                mark_pending(&mut pending, face.id, face.search_pending)?;
            }
            txn.open_table(PHOTOS)?.insert(photo.path.as_str(), encode(&photo).as_slice())?;
            let mut reservations = txn.open_table(RESERVATION)?;
            let last: Option<Reservation> =
                reservations.get(LAST)?.and_then(|r| ciborium::from_reader(r.value()).ok());
            if last.is_some_and(|r| r.photo == photo.path) {
                reservations.remove(LAST)?;
            }
            Ok(())
        })
    }

    async fn set_facens(&self, facens: Vec<(FaceId, Facen)>, search_pending: bool) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(FACES)?;
            let mut pending = txn.open_table(SEARCH_PENDING)?;
            for (id, facen) in facens {
                update_face(&mut table, id, |face| {
                    face.facen = Some(facen);
                    face.search_pending = search_pending;
                })?;
                mark_pending(&mut pending, id, search_pending)?;
            }
            Ok(())
        })
    }

    async fn scan_faces(&self, from: FaceId, limit: usize) -> Result<Vec<FaceRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(FACES).map_err(|e| backend(&self.path, e))?;
            let mut faces = Vec::new();
            for entry in table.range(from..).map_err(|e| backend(&self.path, e))?.take(limit) {
                let (id, bytes) = entry.map_err(|e| backend(&self.path, e))?;
                faces.push(self.decode(id.value(), bytes.value())?);
            }
            Ok(faces)
        })
    }

    async fn search_pending(&self, limit: usize) -> Result<Vec<FaceRecord>, StoreError> {
        let ids: Vec<FaceId> = self.read(|txn| {
            let table = txn.open_table(SEARCH_PENDING).map_err(|e| backend(&self.path, e))?;
            let range = table.range(0..).map_err(|e| backend(&self.path, e))?;
            range.take(limit).map(|entry| Ok(entry.map_err(|e| backend(&self.path, e))?.0.value())).collect()
        })?;
        self.faces(&ids).await
    }

    async fn scan_photos(&self, after: Option<&str>, limit: usize) -> Result<Vec<PhotoRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(PHOTOS).map_err(|e| backend(&self.path, e))?;
            let range = match after {
                Some(after) => {
                    table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                }
                None => table.range::<&str>(..),
            }
            .map_err(|e| backend(&self.path, e))?;
            let mut photos = Vec::new();
            for entry in range.take(limit) {
                let (key, bytes) = entry.map_err(|e| backend(&self.path, e))?;
                photos.push(self.decode(key.value(), bytes.value())?);
            }
            Ok(photos)
        })
    }

    async fn put_shard_progress(&self, progress: &ShardProgress) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(SHARDS)?.insert(progress.key.as_str(), encode(progress).as_slice())?;
            Ok(())
        })
    }

    async fn shard_progress(&self, key: &str) -> Result<Option<ShardProgress>, StoreError> {
        self.get(SHARDS, key)
    }

    async fn all_shard_progress(&self) -> Result<Vec<ShardProgress>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(SHARDS).map_err(|e| backend(&self.path, e))?;
            let mut all = Vec::new();
            for entry in table.range::<&str>(..).map_err(|e| backend(&self.path, e))? {
                let (key, bytes) = entry.map_err(|e| backend(&self.path, e))?;
                all.push(self.decode(key.value(), bytes.value())?);
            }
            Ok(all)
        })
    }

    async fn clear_search_pending(&self, ids: &[FaceId]) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(FACES)?;
            let mut pending = txn.open_table(SEARCH_PENDING)?;
            for &id in ids {
                update_face(&mut table, id, |face| face.search_pending = false)?;
                pending.remove(id)?;
            }
            Ok(())
        })
    }
}

/// Ids reserved for a photo's faces.
#[derive(serde::Serialize, serde::Deserialize)]
struct Reservation {
    photo: String,
    first: FaceId,
    count: u64,
}

fn mark_pending(table: &mut redb::Table<u64, ()>, id: FaceId, pending: bool) -> Result<(), redb::Error> {
    if pending {
        table.insert(id, ())?;
    } else {
        table.remove(id)?;
    }
    Ok(())
}

/// Rewrites face `id` with `change` applied, if it exists.
fn update_face(
    table: &mut redb::Table<u64, &[u8]>,
    id: FaceId,
    change: impl FnOnce(&mut FaceRecord),
) -> Result<(), redb::Error> {
    let Some(bytes) = table.get(id)?.map(|b| b.value().to_vec()) else { return Ok(()) };
    let mut face: FaceRecord = ciborium::from_reader(bytes.as_slice())
        .map_err(|e| redb::Error::Corrupted(format!("face {id}: {e}")))?;
    change(&mut face);
    table.insert(id, encode(&face).as_slice())?;
    Ok(())
}
