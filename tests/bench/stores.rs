//! The production stores under load, on real servers started here (Tarantool from
//! tarantool/init.lua, the MongoDB-wire server of `scripts/stores install`):
//!
//! - faces/s committed to MongoDB as `regenerate` commits them (a photo of 2 faces a call)
//!   and to Tarantool (a photo's facens a call, and 1000 a call as sync-search writes);
//! - `refacen sync-search` facens/s from MongoDB into one and into two Tarantool shards, and
//!   a sync resumed after 90% against the full sync (a resume reads only the rest);
//! - search latency (p50/p99 of 200 queries, top 10, L2) at 10k and 100k stored 128-value
//!   facens, on one shard and on two.
//!
//! `cargo bench --bench stores`. REFACEN_BENCH_FACES (default 2000) sets how many face
//! records go through MongoDB and sync-search; the search sizes are fixed.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use refacen::store::tarantool::{Checkpoint, Metric, TarantoolStore};
use refacen::store::{DetectorProvenance, FaceRecord, FaceStore, Facen, ModelProvenance, MongoStore};
use refacen_test_support::random::unit_floats;
use refacen_test_support::records::photo_record;
use refacen_test_support::repo;
use refacen_test_support::tarantool::{TarantoolServer, free_port};

const MODEL: &str = "bench-model";
const SIZE: usize = 128;

/// A MongoDB-wire server on tmpfs, killed on drop.
struct Mongo {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mongo {
    fn start() -> Mongo {
        let bin = std::env::var_os("REFACEN_SMONGO_WIRE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target/stores-venv/bin/smongo-wire"));
        assert!(bin.is_file(), "{} is missing: run `scripts/stores install`", bin.display());
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--db-path", &dir.path().join("data").display().to_string(), "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "the MongoDB server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mongo { child, port, _dir: dir }
    }

    fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic facens of norm ~1.4 (as dlib's).
fn facen(i: u64) -> Vec<f32> {
    unit_floats(i).take(SIZE).map(|v| (v - 0.5) * 0.43).collect()
}

fn record(id: u64, photo: &str, model: &ModelProvenance, detector: &DetectorProvenance) -> FaceRecord {
    FaceRecord {
        id,
        photo: photo.to_string(),
        orientation: Some(1),
        bbox: [10.0, 20.0, 110.0, 140.0],
        score: 0.99,
        landmarks: [[40.0, 60.0], [80.0, 60.0], [60.0, 85.0], [45.0, 110.0], [75.0, 110.0]],
        normalized: Some(format!("normalized/{id}.png")),
        thumbnail: Some(format!("thumbs/{id}.jpg")),
        facen: Some(Facen { values: facen(id), model: model.clone(), at: 0 }),
        lost: false,
        detector: detector.clone(),
        detected_at: 0,
        search_pending: false,
    }
}

fn per_second(count: u64, elapsed: Duration) -> String {
    format!("{:.0}", count as f64 / elapsed.as_secs_f64().max(1e-9))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

async fn fill(search: &TarantoolStore, space: &str, from: u64, to: u64) {
    let mut batch = Vec::new();
    for id in from..=to {
        batch.push((id, facen(id)));
        if batch.len() == 1000 {
            search.put(space, &batch).await.unwrap();
            batch.clear();
        }
    }
    search.put(space, &batch).await.unwrap();
}

fn sync_search(mongo: &Mongo, shards: &[&TarantoolServer]) -> (u64, f64) {
    let summary = sync_summary(mongo, shards);
    (summary["copied"].as_u64().unwrap(), seconds(&summary["elapsed"]))
}

/// `refacen sync-search --json`'s summary.
fn sync_summary(mongo: &Mongo, shards: &[&TarantoolServer]) -> serde_json::Value {
    let addresses: Vec<String> = shards.iter().map(|s| s.address()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_refacen"))
        .args(["sync-search", "--json", "--model", MODEL, "--mongo", &mongo.uri(), "--mongo-db", "bench"])
        .args(["--tarantool", &addresses.join(",")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn seconds(duration: &serde_json::Value) -> f64 {
    duration["secs"].as_f64().unwrap() + duration["nanos"].as_f64().unwrap() / 1e9
}

#[tokio::main]
async fn main() {
    let faces: u64 = std::env::var("REFACEN_BENCH_FACES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let model = ModelProvenance {
        name: MODEL.into(),
        version: "1".into(),
        sha256: "0".repeat(64),
        facen_size: SIZE as u32,
    };
    let detector = DetectorProvenance {
        name: "bench".into(),
        version: "1".into(),
        sha256: "0".repeat(64),
        params: BTreeMap::new(),
    };
    println!("## stores: {faces} face records, {SIZE}-value facens");

    // MongoDB, as regenerate commits: a photo of two faces per commit.
    let mongo = Mongo::start();
    let store = MongoStore::connect(&mongo.uri(), "bench").await.unwrap();
    let started = Instant::now();
    for photo in 0..faces / 2 {
        let path = format!("{:03}/photo-{photo:06}.jpg", photo / 1000);
        let ids = store.allocate_ids(&path, 2).await.unwrap();
        let records: Vec<FaceRecord> = ids.iter().map(|&id| record(id, &path, &model, &detector)).collect();
        store.commit_photo(photo_record(path, ids, &detector), records).await.unwrap();
    }
    let committed = faces / 2 * 2;
    println!(
        "MongoDB commit_photo (2 faces a photo):       {:>8} faces/s",
        per_second(committed, started.elapsed())
    );

    // Tarantool writes, one shard.
    let shard = TarantoolServer::start();
    let search = TarantoolStore::connect(&[shard.address()]).await.unwrap();
    let space = search.ensure_space("bench-put", SIZE as u32).await.unwrap();
    let started = Instant::now();
    for photo in 0..faces / 2 {
        let pair = [(2 * photo + 1, facen(2 * photo + 1)), (2 * photo + 2, facen(2 * photo + 2))];
        search.put(&space, &pair).await.unwrap();
    }
    println!(
        "Tarantool put (2 facens a call):              {:>8} facens/s",
        per_second(committed, started.elapsed())
    );
    let started = Instant::now();
    fill(&search, &space, faces + 1, 2 * faces).await;
    println!(
        "Tarantool put (1000 facens a call):           {:>8} facens/s",
        per_second(faces, started.elapsed())
    );
    drop(search);
    drop(shard);

    // sync-search from MongoDB.
    let one = TarantoolServer::start();
    let (copied, secs) = sync_search(&mongo, &[&one]);
    println!(
        "sync-search into 1 shard:                     {:>8.0} facens/s ({copied} in {secs:.2} s)",
        copied as f64 / secs
    );
    // The same sync interrupted after 90%: its first 90% copied, its checkpoint saved.
    let interrupted = TarantoolServer::start();
    let search = TarantoolStore::connect(&[interrupted.address()]).await.unwrap();
    let space = search.ensure_space(MODEL, SIZE as u32).await.unwrap();
    search.begin_sync(&space, false).await.unwrap();
    let done = committed * 9 / 10;
    fill(&search, &space, 1, done).await;
    search.save_checkpoint(&space, Checkpoint { last_id: done, facens: done }).await.unwrap();
    drop(search);
    let resumed = sync_summary(&mongo, &[&interrupted]);
    let resumed_secs = seconds(&resumed["elapsed"]);
    println!(
        "sync-search resumed after 90%, 1 shard:       {:>8.2} s, {:.2}x the full sync ({} faces read, {} copied)",
        resumed_secs,
        resumed_secs / secs,
        resumed["faces_read"],
        resumed["copied"]
    );
    drop(interrupted);
    let two = [TarantoolServer::start(), TarantoolServer::start()];
    let (copied, secs) = sync_search(&mongo, &[&two[0], &two[1]]);
    println!(
        "sync-search into 2 shards:                    {:>8.0} facens/s ({copied} in {secs:.2} s)",
        copied as f64 / secs
    );
    drop((one, two));
    drop(mongo);

    // Search latency.
    println!("search latency, top 10, L2 (200 queries):    {:>8} {:>8}", "p50 ms", "p99 ms");
    for shards in [1usize, 2] {
        let servers: Vec<TarantoolServer> = (0..shards).map(|_| TarantoolServer::start()).collect();
        let search =
            TarantoolStore::connect(&servers.iter().map(|s| s.address()).collect::<Vec<_>>()).await.unwrap();
        let space = search.ensure_space("bench-search", SIZE as u32).await.unwrap();
        let mut stored = 0;
        for size in [10_000u64, 100_000] {
            fill(&search, &space, stored + 1, size).await;
            stored = size;
            let query = facen(u64::MAX / 3);
            search.search(&space, &query, 10, Metric::L2).await.unwrap();
            let mut times = Vec::with_capacity(200);
            for q in 0..200u64 {
                let query = facen(u64::MAX / 3 + q);
                let started = Instant::now();
                search.search(&space, &query, 10, Metric::L2).await.unwrap();
                times.push(started.elapsed());
            }
            times.sort();
            println!(
                "  {size:>6} facens, {shards} shard(s):               {:>8.2} {:>8.2}",
                percentile(&times, 0.5),
                percentile(&times, 0.99)
            );
        }
    }
}
