//! The Tarantool search store against real Tarantool instances (`tarantool/init.lua`, started
//! per test on a free port): search answers checked against brute force in the test, sharding,
//! space switching, sync generations, crash and restart, and the errors an operator meets.
//!
//! `cargo test --release -p refacen-store --test tarantool -- --nocapture` also prints the time of a
//! search over 100k 128-value facens.

use std::time::{Duration, Instant};

use refacen_store::StoreError;
use refacen_store::tarantool::{Checkpoint, Metric, SpaceInfo, SyncState, TarantoolStore, space_name};
use refacen_test_support::tarantool::{TarantoolServer, free_port, tarantool_dir};

/// xorshift64*: reproducible facens without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn value(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn facen(&mut self, size: usize) -> Vec<f32> {
        (0..size).map(|_| self.value()).collect()
    }
}

fn facens(rng: &mut Rng, ids: impl IntoIterator<Item = u64>, size: usize) -> Vec<(u64, Vec<f32>)> {
    ids.into_iter().map(|id| (id, rng.facen(size))).collect()
}

/// The distance refacen.lua computes, in the same (double) arithmetic.
fn distance(metric: Metric, query: &[f32], facen: &[f32]) -> f64 {
    match metric {
        Metric::L2 => {
            query.iter().zip(facen).map(|(&q, &x)| (x as f64 - q as f64).powi(2)).sum::<f64>().sqrt()
        }
        Metric::Cosine => {
            let (mut dot, mut norm_x, mut norm_q) = (0f64, 0f64, 0f64);
            for (&q, &x) in query.iter().zip(facen) {
                dot += x as f64 * q as f64;
                norm_x += x as f64 * x as f64;
                norm_q += q as f64 * q as f64;
            }
            let norms = norm_q.sqrt() * norm_x.sqrt();
            if norms > 0.0 { 1.0 - dot / norms } else { 1.0 }
        }
    }
}

fn brute_force(rows: &[(u64, Vec<f32>)], query: &[f32], k: usize, metric: Metric) -> Vec<(u64, f64)> {
    let mut all: Vec<(u64, f64)> = rows.iter().map(|(id, f)| (*id, distance(metric, query, f))).collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

fn assert_same_hits(found: &[(u64, f32)], expected: &[(u64, f64)], what: &str) {
    let ids: Vec<u64> = found.iter().map(|h| h.0).collect();
    let expected_ids: Vec<u64> = expected.iter().map(|h| h.0).collect();
    assert_eq!(ids, expected_ids, "{what}: ids");
    for ((_, d), (id, e)) in found.iter().zip(expected) {
        assert!((*d as f64 - e).abs() < 1e-5, "{what}: distance of {id}: {d} vs {e}");
    }
}

async fn connect(addresses: &[String]) -> TarantoolStore {
    TarantoolStore::connect(addresses).await.unwrap_or_else(|e| panic!("connecting to {addresses:?}: {e}"))
}

fn message(e: StoreError) -> String {
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_brute_force_on_one_shard() {
    let server = TarantoolServer::start();
    let store = connect(&[server.address()]).await;
    assert_eq!(store.shard_count(), 1);
    assert_eq!(store.location(), format!("tarantool {}", server.address()));

    let space = store.ensure_space("Test-Model", 32).await.unwrap();
    assert_eq!(space, "facens_test_model_32");
    assert_eq!(store.ensure_space("Test-Model", 32).await.unwrap(), space, "ensure_space is idempotent");

    let mut rng = Rng(0x5eed);
    let mut rows = facens(&mut rng, 1..=2500, 32);
    store.put(&space, &rows).await.unwrap();
    assert_eq!(store.count(&space).await.unwrap(), 2500);

    // Replacing keeps the count; removing drops the rows (and ignores ids without one).
    let replaced = facens(&mut rng, 1..=300, 32);
    store.put(&space, &replaced).await.unwrap();
    rows[..300].clone_from_slice(&replaced);
    store.remove(&space, &[2500, 2499, 99_999]).await.unwrap();
    rows.truncate(2498);
    assert_eq!(store.count(&space).await.unwrap(), 2498);

    for metric in [Metric::L2, Metric::Cosine] {
        for q in 0..5 {
            let query = rng.facen(32);
            for k in [1, 10, 100] {
                let found = store.search(&space, &query, k, metric).await.unwrap();
                assert_same_hits(
                    &found,
                    &brute_force(&rows, &query, k, metric),
                    &format!("{metric} query {q} k {k}"),
                );
            }
        }
        // A stored facen is its own nearest neighbour, at distance 0.
        let found = store.search(&space, &rows[700].1, 1, metric).await.unwrap();
        assert_eq!(found[0].0, rows[700].0);
        assert!(found[0].1.abs() < 1e-6, "{metric}: {found:?}");
    }
    assert!(store.search(&space, &rng.facen(32), 0, Metric::L2).await.unwrap().is_empty());

    let e = message(store.put(&space, &[(7, vec![0.0; 31])]).await.unwrap_err());
    assert!(e.contains(&space) && e.contains("32-value") && e.contains("124 bytes"), "{e}");
    let e = message(store.search(&space, &[0.0; 16], 5, Metric::L2).await.unwrap_err());
    assert!(e.contains(&space) && e.contains("query"), "{e}");
    let e = message(store.ensure_space("test_model", 32).await.unwrap_err());
    assert!(e.contains(&space) && e.contains("'Test-Model'"), "two model names for one space: {e}");
    let e = message(store.put("facens_nothing_32", &[(1, vec![0.0; 32])]).await.unwrap_err());
    assert!(e.contains("'facens_nothing_32' does not exist") && e.contains(&server.address()), "{e}");
    assert_eq!(store.count(&space).await.unwrap(), 2498, "refused writes changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_by_id_and_merge_to_one_shards_answer() {
    let (a, b, single) = (TarantoolServer::start(), TarantoolServer::start(), TarantoolServer::start());
    let sharded = connect(&[a.address(), b.address()]).await;
    let whole = connect(&[single.address()]).await;
    assert_eq!(sharded.location(), format!("tarantool {},{}", a.address(), b.address()));

    let space = sharded.ensure_space("m", 16).await.unwrap();
    whole.ensure_space("m", 16).await.unwrap();
    let mut rng = Rng(42);
    let rows = facens(&mut rng, (0..3001).map(|i| i * 3 + 1), 16);
    sharded.put(&space, &rows).await.unwrap();
    whole.put(&space, &rows).await.unwrap();

    let even = rows.iter().filter(|(id, _)| id % 2 == 0).count() as u64;
    let odd = rows.len() as u64 - even;
    let spaces = sharded.spaces().await.unwrap();
    assert_eq!(
        spaces,
        vec![SpaceInfo {
            name: space.clone(),
            model_name: "m".into(),
            facen_size: 16,
            count: rows.len() as u64,
            counts_per_shard: vec![even, odd],
            active: false,
        }]
    );
    assert_eq!(connect(&[a.address()]).await.count(&space).await.unwrap(), even);
    assert_eq!(connect(&[b.address()]).await.count(&space).await.unwrap(), odd);

    for metric in [Metric::L2, Metric::Cosine] {
        for k in [1, 7, 50] {
            let query = rng.facen(16);
            let merged = sharded.search(&space, &query, k, metric).await.unwrap();
            assert_eq!(merged, whole.search(&space, &query, k, metric).await.unwrap(), "{metric} k {k}");
            assert_same_hits(&merged, &brute_force(&rows, &query, k, metric), &format!("{metric} k {k}"));
        }
    }

    // Many tasks at once on one store.
    let sharded = std::sync::Arc::new(sharded);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16u64 {
        let (store, space, rows) = (sharded.clone(), space.clone(), rows.clone());
        let query = rng.facen(16);
        tasks.spawn(async move {
            if t % 4 == 0 {
                store.put(&space, &rows[t as usize..t as usize + 100]).await.unwrap();
            }
            let found = store.search(&space, &query, 5, Metric::L2).await.unwrap();
            (found, query)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (found, query) = joined.unwrap();
        assert_same_hits(&found, &brute_force(&rows, &query, 5, Metric::L2), "concurrent search");
    }

    // Equal distances on both shards: the lower ids win, in id order.
    let twins = store_twins(&sharded, &whole, &space, &mut rng).await;
    for found in [
        sharded.search(&space, &twins, 3, Metric::L2).await.unwrap(),
        whole.search(&space, &twins, 3, Metric::L2).await.unwrap(),
    ] {
        assert_eq!(found, vec![(20_001, 0.0), (20_002, 0.0), (20_003, 0.0)]);
    }

    let removed: Vec<u64> = rows[..10].iter().map(|r| r.0).collect();
    sharded.remove(&space, &removed).await.unwrap();
    assert_eq!(sharded.count(&space).await.unwrap(), rows.len() as u64 + 6 - 10);
}

/// One facen stored under ids 20001..=20006 in both stores, written highest id first.
async fn store_twins(a: &TarantoolStore, b: &TarantoolStore, space: &str, rng: &mut Rng) -> Vec<f32> {
    let facen = rng.facen(16);
    let twins: Vec<(u64, Vec<f32>)> = (20_001..=20_006).rev().map(|id| (id, facen.clone())).collect();
    a.put(space, &twins).await.unwrap();
    b.put(space, &twins).await.unwrap();
    facen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spaces_activate_and_drop() {
    let (a, b) = (TarantoolServer::start(), TarantoolServer::start());
    let store = connect(&[a.address(), b.address()]).await;
    let shard0 = connect(&[a.address()]).await;
    let shard1 = connect(&[b.address()]).await;
    assert!(store.spaces().await.unwrap().is_empty());
    assert_eq!(store.active_space().await.unwrap(), None);

    let old = store.ensure_space("old-model", 4).await.unwrap();
    let new = store.ensure_space("new-model", 8).await.unwrap();
    let mut rng = Rng(7);
    store.put(&old, &facens(&mut rng, 0..10, 4)).await.unwrap();
    store.put(&new, &facens(&mut rng, 0..5, 8)).await.unwrap();

    store.activate(&old).await.unwrap();
    let active = store.active_space().await.unwrap().expect("an active space");
    assert_eq!(
        (active.name.as_str(), active.count, active.counts_per_shard.as_slice()),
        (old.as_str(), 10, &[5, 5][..])
    );
    let listed: Vec<(String, bool)> =
        store.spaces().await.unwrap().into_iter().map(|s| (s.name, s.active)).collect();
    assert_eq!(listed, vec![(new.clone(), false), (old.clone(), true)]);
    assert_eq!(shard1.active_space().await.unwrap().map(|s| s.name), Some(old.clone()));

    let e = message(store.drop_space(&old).await.unwrap_err());
    assert!(e.contains(&old) && e.contains("active"), "{e}");
    store.drop_space(&new).await.unwrap();
    assert_eq!(
        store.spaces().await.unwrap().into_iter().map(|s| s.name).collect::<Vec<_>>(),
        vec![old.clone()]
    );
    let e = message(store.drop_space(&new).await.unwrap_err());
    assert!(e.contains("does not exist on any shard"), "{e}");

    // Missing everywhere: refused, nothing switched.
    let e = message(store.activate("facens_missing_4").await.unwrap_err());
    assert!(e.contains("facens_missing_4") && e.contains("cannot be activated"), "{e}");
    assert_eq!(store.active_space().await.unwrap().map(|s| s.name), Some(old.clone()));

    // Missing on shard 1 only: refused naming shard 1, and shard 0 (the switch) untouched.
    let half = shard0.ensure_space("half", 4).await.unwrap();
    let e = message(store.activate(&half).await.unwrap_err());
    assert!(e.contains(&half) && e.contains(&format!("tarantool {}", b.address())), "{e}");
    assert_eq!(shard0.active_space().await.unwrap().map(|s| s.name), Some(old.clone()));
    assert_eq!(shard1.active_space().await.unwrap().map(|s| s.name), Some(old.clone()));
    let listed = store.spaces().await.unwrap();
    let half_info = listed.iter().find(|s| s.name == half).expect("the half space listed");
    assert_eq!(half_info.counts_per_shard, vec![0, 0]);

    // Completing the space makes the switch go through.
    store.ensure_space("half", 4).await.unwrap();
    store.activate(&half).await.unwrap();
    assert_eq!(store.active_space().await.unwrap().map(|s| s.name), Some(half.clone()));
    store.drop_space(&old).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_generations_sweep_what_was_not_copied_again() {
    let (a, b) = (TarantoolServer::start(), TarantoolServer::start());
    let store = connect(&[a.address(), b.address()]).await;
    let space = store.ensure_space("sync", 4).await.unwrap();
    let mut rng = Rng(99);
    store.put(&space, &facens(&mut rng, 0..100, 4)).await.unwrap();

    assert_eq!(store.finish_sync(&space).await.unwrap(), 0, "no sync in progress: nothing swept");
    let e = message(store.save_checkpoint(&space, Checkpoint { last_id: 5, facens: 6 }).await.unwrap_err());
    assert!(e.contains(&space) && e.contains("no sync in progress"), "{e}");

    let state = store.begin_sync(&space, false).await.unwrap();
    assert_eq!(state, SyncState { generation: 1, checkpoint: None });
    store.put(&space, &facens(&mut rng, 0..50, 4)).await.unwrap();
    assert_eq!(store.interrupted_sync("sync").await.unwrap(), None, "no checkpoint yet");
    let checkpoint = Checkpoint { last_id: 49, facens: 50 };
    store.save_checkpoint(&space, checkpoint).await.unwrap();

    // A resumed sync continues where the checkpoint says; reading where it stands changes nothing.
    let (info, found) = store.interrupted_sync("sync").await.unwrap().expect("an interrupted sync");
    assert_eq!((info.name.as_str(), found), (space.as_str(), checkpoint));
    assert_eq!(store.interrupted_sync("other-model").await.unwrap(), None);
    assert_eq!(
        store.begin_sync(&space, true).await.unwrap(),
        SyncState { generation: 1, checkpoint: Some(checkpoint) }
    );
    store.put(&space, &facens(&mut rng, 50..80, 4)).await.unwrap();
    // A face added by another writer during the sync is written with the new generation.
    store.put(&space, &facens(&mut rng, [1000], 4)).await.unwrap();

    assert_eq!(store.finish_sync(&space).await.unwrap(), 20, "ids 80..100 were not copied again");
    assert_eq!(store.count(&space).await.unwrap(), 81);
    let info = store.spaces().await.unwrap().remove(0);
    assert_eq!(info.counts_per_shard, vec![41, 40]);
    assert_eq!(store.finish_sync(&space).await.unwrap(), 0, "finishing twice sweeps nothing more");
    assert_eq!(store.interrupted_sync("sync").await.unwrap(), None, "a finished sync is not resumed");

    // With nothing unfinished, resume starts a new sync; without resume, a sync starts over.
    assert_eq!(store.begin_sync(&space, true).await.unwrap(), SyncState { generation: 2, checkpoint: None });
    store.save_checkpoint(&space, Checkpoint { last_id: 10, facens: 11 }).await.unwrap();
    assert_eq!(store.begin_sync(&space, false).await.unwrap(), SyncState { generation: 3, checkpoint: None });
    // Shard 1 joined each generation: rows copied now survive there too.
    store.put(&space, &facens(&mut rng, 0..10, 4)).await.unwrap();
    assert_eq!(store.finish_sync(&space).await.unwrap(), 71);
    assert_eq!(store.spaces().await.unwrap().remove(0).counts_per_shard, vec![5, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_crash_and_calls_ride_out_a_restart() {
    let mut server = TarantoolServer::start();
    let store = connect(&[server.address()]).await;
    let space = store.ensure_space("durable", 8).await.unwrap();
    let mut rng = Rng(3);
    let rows = facens(&mut rng, 0..500, 8);
    store.put(&space, &rows).await.unwrap();
    store.activate(&space).await.unwrap();
    let query = rng.facen(8);
    let before = store.search(&space, &query, 5, Metric::L2).await.unwrap();

    server.restart();
    assert_eq!(store.count(&space).await.unwrap(), 500, "the same store reconnects after the restart");
    assert_eq!(store.search(&space, &query, 5, Metric::L2).await.unwrap(), before);
    assert_eq!(store.active_space().await.unwrap().map(|s| s.name), Some(space.clone()));

    // Down while the put is issued, back 1.5 s later: the put's retries carry it through.
    server.kill();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        server.start_again();
        server
    });
    let started = Instant::now();
    store
        .put(&space, &facens(&mut rng, 500..600, 8))
        .await
        .expect("the put is retried until the server is back");
    let waited = started.elapsed();
    let server = restarter.join().expect("restarting");
    assert!(
        waited >= Duration::from_secs(1),
        "the put finished after {waited:?}, before the server was back?"
    );
    assert_eq!(store.count(&space).await.unwrap(), 600);

    // A second crash right after: those rows were in the WAL too.
    let mut server = server;
    server.restart();
    assert_eq!(store.count(&space).await.unwrap(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_unprepared_instances_are_reported_clearly() {
    // Nothing listening: refused at once.
    let nobody = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let e = message(TarantoolStore::connect(std::slice::from_ref(&nobody)).await.err().expect("no server"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(e.contains(&nobody) && e.contains("cannot connect") && e.contains("is running"), "{e}");

    // Listening but silent (not Tarantool, or hung): the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let e = message(
        TarantoolStore::connect(std::slice::from_ref(&silent_address)).await.err().expect("a silent server"),
    );
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert!(e.contains(&silent_address) && e.contains("within 3 s"), "{e}");

    // One bad shard among good ones is named.
    let good = TarantoolServer::start();
    let e =
        message(TarantoolStore::connect(&[good.address(), nobody.clone()]).await.err().expect("a bad shard"));
    assert!(e.contains(&nobody) && !e.contains(&good.address()), "{e}");

    let e = message(TarantoolStore::connect(&["localhost".into()]).await.err().expect("no port"));
    assert!(e.contains("not host:port"), "{e}");
    let e = message(TarantoolStore::connect(&[good.address(), good.address()]).await.err().expect("twice"));
    assert!(e.contains("given twice"), "{e}");

    // A Tarantool without refacen.lua.
    let plain = TarantoolServer::start_lua(
        "box.cfg{listen = os.getenv('REFACEN_TARANTOOL_LISTEN'), work_dir = os.getenv('REFACEN_TARANTOOL_DIR')}",
    );
    let e = message(TarantoolStore::connect(&[plain.address()]).await.err().expect("refacen.lua not loaded"));
    assert!(
        e.contains(&plain.address())
            && e.contains("does not have refacen.lua loaded")
            && e.contains("tarantool/README.md"),
        "{e}"
    );
}

/// The production setup of tarantool/README.md: refacen.lua loaded by the instance's own init,
/// a user with a password and the refacen_client role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_user_with_the_role() {
    let lua = format!(
        r#"package.path = '{}/?.lua;' .. package.path
box.cfg{{work_dir = os.getenv('REFACEN_TARANTOOL_DIR')}}
require('refacen')
box.once('users', function()
    box.schema.user.create('refacen', {{password = 's3cret'}})
    box.schema.user.grant('refacen', 'refacen_client')
    box.schema.user.create('nobody', {{password = 'n0body'}})
end)
box.cfg{{listen = os.getenv('REFACEN_TARANTOOL_LISTEN')}}
"#,
        tarantool_dir().display()
    );
    let server = TarantoolServer::start_lua(&lua);
    let address = format!("refacen:s3cret@{}", server.address());
    let store = connect(std::slice::from_ref(&address)).await;
    assert_eq!(store.location(), format!("tarantool refacen@{}", server.address()));
    let space = store.ensure_space("auth", 4).await.unwrap();
    store.put(&space, &[(1, vec![1.0, 0.0, 0.0, 0.0]), (2, vec![0.0, 1.0, 0.0, 0.0])]).await.unwrap();
    let found = store.search(&space, &[0.9, 0.1, 0.0, 0.0], 1, Metric::Cosine).await.unwrap();
    assert_eq!(found[0].0, 1);

    let e = message(
        TarantoolStore::connect(&[format!("refacen:wrong@{}", server.address())]).await.err().unwrap(),
    );
    assert!(e.contains("authenticating as user 'refacen'") && !e.contains("wrong"), "{e}");
    let e = message(
        TarantoolStore::connect(&[format!("nobody:n0body@{}", server.address())]).await.err().unwrap(),
    );
    assert!(e.contains("user 'nobody' lacks the role refacen_client") && !e.contains("n0body"), "{e}");
    // Guest has no role here.
    let e = message(TarantoolStore::connect(&[server.address()]).await.err().unwrap());
    assert!(e.contains("user 'guest' lacks the role"), "{e}");
}

/// Not asserted: the time to quote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_time_over_100k_facens() {
    const ROWS: u64 = 100_000;
    const SIZE: usize = 128;
    let server = TarantoolServer::start();
    let store = connect(&[server.address()]).await;
    let space = store.ensure_space("bench", SIZE as u32).await.unwrap();
    assert_eq!(space, space_name("bench", SIZE as u32));
    let mut rng = Rng(1);
    let started = Instant::now();
    for start in (0..ROWS).step_by(10_000) {
        store.put(&space, &facens(&mut rng, start..start + 10_000, SIZE)).await.unwrap();
    }
    let put = started.elapsed();
    assert_eq!(store.count(&space).await.unwrap(), ROWS);
    for metric in [Metric::L2, Metric::Cosine] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let query = rng.facen(SIZE);
            let started = Instant::now();
            let found = store.search(&space, &query, 10, metric).await.unwrap();
            times.push(started.elapsed());
            assert_eq!(found.len(), 10);
        }
        times.sort();
        println!(
            "tarantool search, {ROWS} x {SIZE}, k 10, {metric}: median {:.1} ms (min {:.1}, max {:.1}); put {:.2} s",
            times[2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[4].as_secs_f64() * 1e3,
            put.as_secs_f64()
        );
    }
}
