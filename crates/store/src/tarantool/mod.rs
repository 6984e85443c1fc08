//! The search store: facens in Tarantool, searched there. The face records stay in the face
//! store; Tarantool holds only what a search needs (face id and facen) in memory, one space
//! per model, and runs the brute-force k-nearest search next to the data
//! (`tarantool/refacen.lua`), so a search moves k results per shard over the network, not the
//! facens.
//!
//! Faces are sharded over several instances by `id % shard count`; every shard holds every
//! space, and a search asks all of them and merges. Which space searches use (the *active*
//! one) is what shard 0 says: a new model's space is filled while searches go on in the old
//! one, then activated on the other shards and on shard 0 last, the switch point, so a failure
//! halfway leaves searches on the old space and a rerun completes the switch.
//!
//! A sync (copying every facen of a model from the face store again) is marked by generations:
//! `begin_sync` raises the space's generation, every row written from then on carries it, and
//! `finish_sync` deletes the rows that do not (faces no longer in the face store). Shard 0
//! keeps the generation and checkpoint that a resumed sync continues from.

mod iproto;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

pub use refacen_face::Metric;
use rmpv::Value;

use super::retry::RetryWindow;
use super::{FaceId, StoreError};
use iproto::{Address, Client, Error};

/// The refacen.lua protocol this client speaks (`refacen.version()`).
const PROTOCOL: u64 = 2;
/// Rows per `refacen.put` / `refacen.delete` call: one transaction of about 0.5 MB of
/// 128-value facens.
const ROWS_PER_CALL: usize = 1000;

/// One facen space, over all shards.
#[derive(Clone, Debug, PartialEq)]
pub struct SpaceInfo {
    pub name: String,
    pub model_name: String,
    pub facen_size: u32,
    pub count: u64,
    /// Rows on each shard, in the order of the addresses (0 where the space is missing).
    pub counts_per_shard: Vec<u64>,
    /// Whether shard 0 has it as the space searches use.
    pub active: bool,
}

/// Where a sync stands: its generation, and what it recorded as copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncState {
    pub generation: u64,
    pub checkpoint: Option<Checkpoint>,
}

/// A sync's progress: the facens of every face up to `last_id` are copied; the face store
/// held `facens` of them (what a resumed sync, reading only the faces after `last_id`, adds
/// its own count to before it verifies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub last_id: FaceId,
    pub facens: u64,
}

/// The space of a model's facens: `facens_<model>_<size>`, the model name lowercased with
/// every character other than `[a-z0-9]` replaced by `_` (Tarantool space names are
/// identifiers), the size so that a model whose facen size changes gets a new space.
pub fn space_name(model_name: &str, facen_size: u32) -> String {
    let model: String = model_name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '_' })
        .collect();
    format!("facens_{model}_{facen_size}")
}

/// One instance: its connection, and how messages name it.
struct Shard {
    client: Client,
    location: String,
}

impl Shard {
    fn fail(&self, message: String) -> StoreError {
        StoreError::Backend { location: self.location.clone(), message }
    }

    /// Calls `refacen.<function>` and returns its first return value (nil when none).
    async fn call(&self, function: &str, args: Vec<Value>) -> Result<Value, StoreError> {
        let name = format!("refacen.{function}");
        match self.client.call(&name, args).await {
            Ok(values) => Ok(values.into_iter().next().unwrap_or(Value::Nil)),
            Err(Error::Server { message, .. }) => Err(self.fail(message)),
            Err(Error::Io(message)) => Err(self.fail(format!(
                "{name} got no answer: {message}; check that the instance is running and reachable"
            ))),
        }
    }

    fn bad_answer(&self, function: &str, value: &Value) -> StoreError {
        self.fail(format!(
            "unexpected answer to refacen.{function}: {value}; is the instance's refacen.lua the one of this refacen?"
        ))
    }

    async fn uint(&self, function: &str, args: Vec<Value>) -> Result<u64, StoreError> {
        let value = self.call(function, args).await?;
        value.as_u64().ok_or_else(|| self.bad_answer(function, &value))
    }

    async fn check_version(&self) -> Result<(), StoreError> {
        let version = match self.client.call("refacen.version", Vec::new()).await {
            Ok(values) => values.into_iter().next().unwrap_or(Value::Nil),
            Err(Error::Server { code, message }) => {
                let hint = if code == iproto::ER_NO_SUCH_PROC {
                    String::new()
                } else {
                    format!(", or user '{}' lacks the role refacen_client", self.client.address().user())
                };
                return Err(self.fail(format!(
                    "this instance does not have refacen.lua loaded ({message}){hint}: see tarantool/README.md"
                )));
            }
            Err(Error::Io(message)) => {
                return Err(self.fail(format!("refacen.version got no answer: {message}")));
            }
        };
        match version.as_u64() {
            Some(PROTOCOL) => Ok(()),
            _ => Err(self.fail(format!(
                "this instance's refacen.lua speaks protocol {version}, this refacen speaks {PROTOCOL}: load \
                 the tarantool/refacen.lua of this refacen version"
            ))),
        }
    }

    async fn active(&self) -> Result<Option<String>, StoreError> {
        match self.call("active", Vec::new()).await? {
            Value::Nil => Ok(None),
            Value::String(name) if name.is_str() => Ok(name.into_str()),
            value => Err(self.bad_answer("active", &value)),
        }
    }
}

/// The search store: a connection to each shard.
pub struct TarantoolStore {
    shards: Vec<Arc<Shard>>,
}

impl TarantoolStore {
    /// Connects to every shard (`host:port` or `user:password@host:port`, shard 0 first), pings
    /// it and checks that it has refacen.lua loaded. An unreachable shard is an error naming it
    /// within a few seconds. Calls are retried for the default window
    /// ([`TarantoolStore::connect_retrying`]).
    pub async fn connect(addresses: &[String]) -> Result<Self, StoreError> {
        Self::connect_retrying(addresses, RetryWindow::DEFAULT).await
    }

    /// [`TarantoolStore::connect`], with calls to a shard that stops answering retried for
    /// `retry`.
    pub async fn connect_retrying(addresses: &[String], retry: RetryWindow) -> Result<Self, StoreError> {
        if addresses.is_empty() {
            return Err(StoreError::Backend {
                location: "tarantool".into(),
                message: "no address given (host:port or user:password@host:port)".into(),
            });
        }
        let parsed = addresses
            .iter()
            .map(|a| {
                Address::parse(a)
                    .map_err(|message| StoreError::Backend { location: "tarantool".into(), message })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, address) in parsed.iter().enumerate() {
            if parsed[..i].iter().any(|a| a.host_port() == address.host_port()) {
                return Err(StoreError::Backend {
                    location: "tarantool".into(),
                    message: format!(
                        "{} is given twice: each shard is its own instance, and faces are routed by their \
                         position in the list",
                        address.host_port()
                    ),
                });
            }
        }
        let shards = all(parsed.into_iter().map(|address| async move {
            let location = format!("tarantool {address}");
            let client = Client::connect(address, retry).await.map_err(|e| StoreError::Backend {
                location: location.clone(),
                message: match e {
                    Error::Server { message, .. } => message,
                    Error::Io(message) => format!(
                        "cannot connect ({message}); check that Tarantool is running there, listens on this \
                         address (box.cfg listen) and is reachable from here"
                    ),
                },
            })?;
            let shard = Shard { client, location };
            shard.check_version().await?;
            Ok(Arc::new(shard))
        }))
        .await?;
        Ok(TarantoolStore { shards })
    }

    /// `tarantool host:port,host:port`, without passwords.
    pub fn location(&self) -> String {
        let addresses: Vec<String> = self.shards.iter().map(|s| s.client.address().to_string()).collect();
        format!("tarantool {}", addresses.join(","))
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Creates the model's space on every shard where it is missing; returns its name.
    pub async fn ensure_space(&self, model_name: &str, facen_size: u32) -> Result<String, StoreError> {
        let name = space_name(model_name, facen_size);
        let args = vec![name.as_str().into(), model_name.into(), facen_size.into()];
        self.on_every_shard(|shard| {
            let args = args.clone();
            async move { shard.uint("ensure_space", args).await }
        })
        .await?;
        Ok(name)
    }

    /// Writes (inserts or replaces) facens, each on its face's shard, the shards concurrently.
    pub async fn put(&self, space: &str, facens: &[(FaceId, Vec<f32>)]) -> Result<(), StoreError> {
        let mut rows = vec![Vec::new(); self.shards.len()];
        for (id, facen) in facens {
            let bytes: Vec<u8> = facen.iter().flat_map(|v| v.to_le_bytes()).collect();
            rows[self.shard_of(*id)].push(Value::Array(vec![(*id).into(), Value::Binary(bytes)]));
        }
        self.in_batches(space, "put", rows).await
    }

    /// Deletes rows by face id; ids without a row are ignored.
    pub async fn remove(&self, space: &str, ids: &[FaceId]) -> Result<(), StoreError> {
        let mut rows = vec![Vec::new(); self.shards.len()];
        for id in ids {
            rows[self.shard_of(*id)].push(Value::from(*id));
        }
        self.in_batches(space, "delete", rows).await
    }

    /// Rows of the space over all shards.
    pub async fn count(&self, space: &str) -> Result<u64, StoreError> {
        let counts = self
            .on_every_shard(|shard| {
                let args = vec![space.into()];
                async move { shard.uint("count", args).await }
            })
            .await?;
        Ok(counts.into_iter().sum())
    }

    /// Every facen space on any shard, by name.
    pub async fn spaces(&self) -> Result<Vec<SpaceInfo>, StoreError> {
        let shard0 = self.shards[0].clone();
        let (listed, active) = tokio::join!(
            self.on_every_shard(|shard| async move {
                let value = shard.call("spaces", Vec::new()).await?;
                parse_spaces(&value).ok_or_else(|| shard.bad_answer("spaces", &value))
            }),
            async move { shard0.active().await },
        );
        let (listed, active) = (listed?, active?);
        let mut spaces = BTreeMap::new();
        for (i, shard_spaces) in listed.into_iter().enumerate() {
            for (name, model_name, facen_size, count) in shard_spaces {
                let info = spaces.entry(name.clone()).or_insert_with(|| SpaceInfo {
                    active: active.as_deref() == Some(name.as_str()),
                    name,
                    model_name,
                    facen_size,
                    count: 0,
                    counts_per_shard: vec![0; self.shards.len()],
                });
                info.count += count;
                info.counts_per_shard[i] = count;
            }
        }
        Ok(spaces.into_values().collect())
    }

    /// The space searches use, as shard 0 says; None before any was activated.
    pub async fn active_space(&self) -> Result<Option<SpaceInfo>, StoreError> {
        Ok(self.spaces().await?.into_iter().find(|s| s.active))
    }

    /// Makes `space` the one searches use. Every shard must hold it; it is activated on shards
    /// 1.. first and on shard 0, the switch point, last.
    pub async fn activate(&self, space: &str) -> Result<(), StoreError> {
        self.on_every_shard(|shard| {
            let space = space.to_string();
            async move {
                shard.uint("count", vec![space.as_str().into()]).await.map_err(|e| match e {
                    StoreError::Backend { location, message } => StoreError::Backend {
                        location,
                        message: format!("space {space} cannot be activated: {message}"),
                    },
                    e => e,
                })
            }
        })
        .await?;
        self.on_shards(1..self.shards.len(), |shard| {
            let args = vec![space.into()];
            async move { shard.call("activate", args).await }
        })
        .await?;
        self.shards[0].call("activate", vec![space.into()]).await?;
        Ok(())
    }

    /// Drops a space that is not active: on shard 0 first (which refuses the active space),
    /// then on the others. Shards that do not hold it are skipped.
    pub async fn drop_space(&self, space: &str) -> Result<(), StoreError> {
        let dropped = |value: &Value| value.as_bool() == Some(true);
        let first = dropped(&self.shards[0].call("drop", vec![space.into()]).await?);
        let others = self
            .on_shards(1..self.shards.len(), |shard| {
                let args = vec![space.into()];
                async move { shard.call("drop", args).await }
            })
            .await?;
        if !first && !others.iter().any(dropped) {
            return Err(StoreError::Backend {
                location: self.location(),
                message: format!("space {space} does not exist on any shard"),
            });
        }
        Ok(())
    }

    /// The `k` rows of `space` nearest to `query` over all shards, nearest first (ties by id).
    pub async fn search(
        &self,
        space: &str,
        query: &[f32],
        k: usize,
        metric: Metric,
    ) -> Result<Vec<(FaceId, f32)>, StoreError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let query: Vec<u8> = query.iter().flat_map(|v| v.to_le_bytes()).collect();
        let found = self
            .on_every_shard(|shard| {
                let args = vec![
                    space.into(),
                    Value::Binary(query.clone()),
                    (k as u64).into(),
                    metric.as_str().into(),
                ];
                async move {
                    let value = shard.call("search", args).await?;
                    parse_hits(&value).ok_or_else(|| shard.bad_answer("search", &value))
                }
            })
            .await?;
        let mut hits: Vec<(FaceId, f64)> = found.into_iter().flatten().collect();
        hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        Ok(hits.into_iter().map(|(id, distance)| (id, distance as f32)).collect())
    }

    /// Starts a sync of `space`, or with `resume` continues the unfinished one. Shard 0 decides
    /// the generation; the other shards take it.
    pub async fn begin_sync(&self, space: &str, resume: bool) -> Result<SyncState, StoreError> {
        let shard0 = &self.shards[0];
        let value = shard0.call("begin_sync", vec![space.into(), resume.into()]).await?;
        let state = parse_sync_state(&value).ok_or_else(|| shard0.bad_answer("begin_sync", &value))?;
        self.on_shards(1..self.shards.len(), |shard| {
            let args = vec![space.into(), state.generation.into()];
            async move { shard.uint("join_sync", args).await }
        })
        .await?;
        Ok(state)
    }

    /// Records the progress of the sync in progress (on shard 0).
    pub async fn save_checkpoint(&self, space: &str, checkpoint: Checkpoint) -> Result<(), StoreError> {
        let args = vec![space.into(), checkpoint.last_id.into(), checkpoint.facens.into()];
        self.shards[0].call("checkpoint", args).await?;
        Ok(())
    }

    /// A space of `model_name` whose sync stopped after a checkpoint, and that checkpoint, as
    /// shard 0 records them; None when there is none. Changes nothing.
    pub async fn interrupted_sync(
        &self,
        model_name: &str,
    ) -> Result<Option<(SpaceInfo, Checkpoint)>, StoreError> {
        let shard0 = &self.shards[0];
        for space in self.spaces().await?.into_iter().filter(|s| s.model_name == model_name) {
            let value = shard0.call("sync_state", vec![space.name.as_str().into()]).await?;
            if value.is_nil() {
                continue;
            }
            let state = parse_sync_state(&value).ok_or_else(|| shard0.bad_answer("sync_state", &value))?;
            if let Some(checkpoint) = state.checkpoint {
                return Ok(Some((space, checkpoint)));
            }
        }
        Ok(None)
    }

    /// Ends the sync in progress: deletes the rows it did not write, on shards 1.. then on
    /// shard 0 (whose unfinished sync a failure halfway thus leaves to resume). Returns how
    /// many rows were deleted.
    pub async fn finish_sync(&self, space: &str) -> Result<u64, StoreError> {
        let swept = self
            .on_shards(1..self.shards.len(), |shard| {
                let args = vec![space.into()];
                async move { shard.uint("finish_sync", args).await }
            })
            .await?;
        let swept0 = self.shards[0].uint("finish_sync", vec![space.into()]).await?;
        Ok(swept.into_iter().sum::<u64>() + swept0)
    }

    fn shard_of(&self, id: FaceId) -> usize {
        (id % self.shards.len() as u64) as usize
    }

    /// Calls `refacen.<function>(space, batch)` for each batch of each shard's items, the
    /// shards concurrently.
    async fn in_batches(
        &self,
        space: &str,
        function: &'static str,
        items: Vec<Vec<Value>>,
    ) -> Result<(), StoreError> {
        let jobs = items.into_iter().zip(&self.shards).filter(|(items, _)| !items.is_empty()).map(
            |(items, shard)| {
                let shard = shard.clone();
                let space = Value::from(space);
                async move {
                    let mut items = items.into_iter();
                    loop {
                        let batch: Vec<Value> = items.by_ref().take(ROWS_PER_CALL).collect();
                        if batch.is_empty() {
                            return Ok(());
                        }
                        shard.uint(function, vec![space.clone(), Value::Array(batch)]).await?;
                    }
                }
            },
        );
        all(jobs).await?;
        Ok(())
    }

    async fn on_every_shard<T, F, Fut>(&self, job: F) -> Result<Vec<T>, StoreError>
    where
        F: Fn(Arc<Shard>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.on_shards(0..self.shards.len(), job).await
    }

    /// Runs `job` on the given shards concurrently; their results in shard order.
    async fn on_shards<T, F, Fut>(&self, shards: std::ops::Range<usize>, job: F) -> Result<Vec<T>, StoreError>
    where
        F: Fn(Arc<Shard>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        all(self.shards[shards].iter().map(|shard| job(shard.clone()))).await
    }
}

/// Runs the jobs concurrently (each a task, so they proceed even while the caller's task is
/// busy); their results in job order, or the first error in job order.
async fn all<T, Fut>(jobs: impl IntoIterator<Item = Fut>) -> Result<Vec<T>, StoreError>
where
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut count = 0;
    for (i, job) in jobs.into_iter().enumerate() {
        tasks.spawn(async move { (i, job.await) });
        count += 1;
    }
    let mut results: Vec<Option<Result<T, StoreError>>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, result)) => results[i] = Some(result),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    results.into_iter().map(|r| r.expect("every task reported")).collect()
}

fn parse_spaces(value: &Value) -> Option<Vec<(String, String, u32, u64)>> {
    value
        .as_array()?
        .iter()
        .map(|row| match row.as_array()?.as_slice() {
            [name, model, size, count, ..] => Some((
                name.as_str()?.to_string(),
                model.as_str()?.to_string(),
                u32::try_from(size.as_u64()?).ok()?,
                count.as_u64()?,
            )),
            _ => None,
        })
        .collect()
}

fn parse_hits(value: &Value) -> Option<Vec<(FaceId, f64)>> {
    value
        .as_array()?
        .iter()
        .map(|hit| match hit.as_array()?.as_slice() {
            [id, distance, ..] => Some((id.as_u64()?, distance.as_f64()?)),
            _ => None,
        })
        .collect()
}

fn parse_sync_state(value: &Value) -> Option<SyncState> {
    let fields = value.as_array()?;
    let generation = fields.first()?.as_u64()?;
    let field = |i: usize| match fields.get(i) {
        None | Some(Value::Nil) => Some(None),
        Some(value) => value.as_u64().map(Some),
    };
    let checkpoint = match (field(1)?, field(2)?) {
        (Some(last_id), Some(facens)) => Some(Checkpoint { last_id, facens }),
        _ => None,
    };
    Some(SyncState { generation, checkpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_names() {
        assert_eq!(space_name("dlib-resnet-128", 128), "facens_dlib_resnet_128_128");
        assert_eq!(space_name("FaceNet.v2 (π)", 512), "facens_facenet_v2_____512");
    }
}
