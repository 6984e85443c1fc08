//! Where face records and facens live, for every subcommand that reads or writes them: the
//! embedded store in a state directory or MongoDB for records, Tarantool for search.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

#[cfg(feature = "mongo")]
use refacen_store::MongoStore;
use refacen_store::tarantool::TarantoolStore;
use refacen_store::{EmbeddedStore, FaceStore, RetryWindow};

/// How long a database server that stops answering is retried.
#[derive(Args, Debug, Clone)]
pub struct StoreRetryArgs {
    /// Seconds to keep retrying an operation on MongoDB or a Tarantool shard that stops
    /// answering, from its first failure, before the run stops with the cause (0: no retries).
    /// Retries are logged when they start and when the server answers again or they give up.
    #[arg(long, env = "REFACEN_STORE_RETRY_S", value_name = "SECONDS", default_value_t = RetryWindow::DEFAULT.0.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub store_retry_s: u64,
}

impl StoreRetryArgs {
    pub fn window(&self) -> RetryWindow {
        RetryWindow(Duration::from_secs(self.store_retry_s))
    }
}

/// Where face records are.
#[derive(Args, Debug, Clone)]
pub struct FaceStoreArgs {
    /// MongoDB holding the face records (e.g. `mongodb://db.example:27017`); without it,
    /// the embedded store of the state directory.
    #[arg(long, env = "REFACEN_MONGO", value_name = "URI")]
    pub mongo: Option<String>,

    /// The MongoDB database of the face records.
    #[arg(long, env = "REFACEN_MONGO_DB", value_name = "NAME", default_value = "refacen")]
    pub mongo_db: String,

    #[command(flatten)]
    pub retry: StoreRetryArgs,
}

/// Where the face records a reading command works on are: MongoDB, or the embedded store of
/// an Uploads directory's state.
#[derive(Args, Debug, Clone)]
pub struct ExistingFaceStoreArgs {
    /// The Uploads directory whose embedded face store to use (its state is
    /// `<uploads>.refacen`); not needed with --mongo or --state-dir.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["state_dir", "mongo"])]
    pub uploads: Option<PathBuf>,

    /// The state directory of the embedded face store (as given to `regenerate --state-dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(flatten)]
    pub store: FaceStoreArgs,
}

impl ExistingFaceStoreArgs {
    pub async fn open(&self) -> anyhow::Result<Arc<dyn FaceStore>> {
        let uploads = self.uploads.clone().unwrap_or_default();
        self.store.open(&StateLayout::new(&uploads, self.state_dir.as_deref(), None), true).await
    }
}

/// Where facens are searched.
#[derive(Args, Debug, Clone)]
pub struct SearchStoreArgs {
    /// Tarantool instances holding facens for search, `HOST:PORT` or `USER:PASSWORD@HOST:PORT`,
    /// comma-separated; several are shards (a face goes to one by id, search asks them all).
    /// They must have tarantool/refacen.lua loaded.
    #[arg(long, env = "REFACEN_TARANTOOL", value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub tarantool: Vec<String>,
}

impl FaceStoreArgs {
    /// The face store: MongoDB when configured, else the embedded store of `layout`
    /// (which must already exist when `existing`).
    pub async fn open(&self, layout: &StateLayout, existing: bool) -> anyhow::Result<Arc<dyn FaceStore>> {
        Ok(match &self.mongo {
            #[cfg(feature = "mongo")]
            Some(uri) => {
                Arc::new(MongoStore::connect_retrying(uri, &self.mongo_db, self.retry.window()).await?)
            }
            #[cfg(not(feature = "mongo"))]
            Some(_) => bail!(
                "--mongo: this refacen was built without MongoDB support; build it with `--features mongo` \
                 (a default feature) or leave out --mongo to use the embedded store"
            ),
            None if existing => Arc::new(layout.open_existing_store()?),
            None => Arc::new(layout.open_store()?),
        })
    }
}

impl SearchStoreArgs {
    /// The search store, when `--tarantool` is given.
    pub async fn open(&self, retry: &StoreRetryArgs) -> anyhow::Result<Option<Arc<TarantoolStore>>> {
        let addresses: Vec<String> =
            self.tarantool.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        if addresses.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(TarantoolStore::connect_retrying(&addresses, retry.window()).await?)))
    }

    /// The search store, which the command cannot do without.
    pub async fn open_required(
        &self,
        command: &str,
        retry: &StoreRetryArgs,
    ) -> anyhow::Result<Arc<TarantoolStore>> {
        match self.open(retry).await? {
            Some(search) => Ok(search),
            None => bail!(
                "{command} needs the search store: give --tarantool HOST:PORT[,...] (or REFACEN_TARANTOOL)"
            ),
        }
    }
}

/// An existing face store and the search store beside it, for the commands that read both
/// (`search`, `sync-search`); the search store retries as the face store does.
#[derive(Args, Debug, Clone)]
pub struct ExistingStoresArgs {
    #[command(flatten)]
    pub face_store: ExistingFaceStoreArgs,

    #[command(flatten)]
    pub search_store: SearchStoreArgs,
}

impl ExistingStoresArgs {
    /// The face store, and the search store when `--tarantool` is given.
    pub async fn open(&self) -> anyhow::Result<(Arc<dyn FaceStore>, Option<Arc<TarantoolStore>>)> {
        let store = self.face_store.open().await?;
        Ok((store, self.search_store.open(&self.face_store.store.retry).await?))
    }

    /// Both stores, for a `command` that cannot do without the search store.
    pub async fn open_required(
        &self,
        command: &str,
    ) -> anyhow::Result<(Arc<dyn FaceStore>, Arc<TarantoolStore>)> {
        let store = self.face_store.open().await?;
        Ok((store, self.search_store.open_required(command, &self.face_store.store.retry).await?))
    }
}

/// Where a run keeps its state, as `regenerate` is told, and as every command that reads that
/// state again (`status`) must be told alike.
#[derive(Args, Debug)]
pub struct StateDirArgs {
    /// Where the embedded face store (without --mongo) and the derived files live (default:
    /// `<uploads>.refacen` beside Uploads). Never walked as originals, even inside Uploads.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Where normalized faces and thumbnails go (default: `<state-dir>/files`). Never walked as
    /// originals either.
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,
}

impl StateDirArgs {
    pub fn layout(&self, uploads: &Path) -> StateLayout {
        StateLayout::new(uploads, self.state_dir.as_deref(), self.files_dir.as_deref())
    }
}

/// Where a run keeps its state, derived from the options.
pub struct StateLayout {
    pub state_dir: PathBuf,
    pub files_dir: PathBuf,
}

impl StateLayout {
    pub fn new(uploads: &Path, state_dir: Option<&Path>, files_dir: Option<&Path>) -> Self {
        let state_dir = state_dir.map(Path::to_path_buf).unwrap_or_else(|| {
            let name = uploads.file_name().map_or("uploads".into(), |n| n.to_string_lossy().into_owned());
            let parent = uploads.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            parent.join(format!("{name}.refacen"))
        });
        let files_dir = files_dir.map(Path::to_path_buf).unwrap_or_else(|| state_dir.join("files"));
        StateLayout { state_dir, files_dir }
    }

    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("faces.redb")
    }

    pub fn open_store(&self) -> anyhow::Result<EmbeddedStore> {
        Ok(EmbeddedStore::open(&self.store_path())?)
    }

    /// Opens the store of a state directory that `regenerate` has already written.
    pub fn open_existing_store(&self) -> anyhow::Result<EmbeddedStore> {
        if !self.store_path().exists() {
            bail!("no face store at {}: run `refacen regenerate` first", self.store_path().display());
        }
        self.open_store()
    }
}
