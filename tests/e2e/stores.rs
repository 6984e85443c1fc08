//! The production stores: face records in MongoDB, facens in Tarantool (one or two shards),
//! `sync-search`, `spaces` and `search` against them, the model switch, and faults. Every
//! test starts its own real servers (tests/e2e/servers.rs).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::regenerate::{Uploads, content, count, expected_faces};
use crate::servers::{MongoServer, TarantoolServer, closed_port};
use crate::support::{f32s, photo, refacen, test_guest};

const DLIB: &str = "dlib-resnet-128";
const DLIB_SPACE: &str = "facens_dlib_resnet_128_128";

/// The stores of one test.
pub struct Stores {
    mongo: MongoServer,
    shards: Vec<TarantoolServer>,
}

impl Stores {
    pub fn start(shards: usize) -> Stores {
        Stores {
            mongo: MongoServer::start(),
            shards: (0..shards).map(|_| TarantoolServer::start()).collect(),
        }
    }

    pub fn mongo_args(&self) -> Vec<String> {
        vec!["--mongo".into(), self.mongo.uri(), "--mongo-db".into(), "faces_test".into()]
    }

    pub fn mongo_uri(&self) -> String {
        self.mongo.uri()
    }

    pub fn tarantool(&self) -> String {
        self.shards.iter().map(|s| s.address()).collect::<Vec<_>>().join(",")
    }

    pub fn both_args(&self) -> Vec<String> {
        let mut args = self.mongo_args();
        args.extend(["--tarantool".into(), self.tarantool()]);
        args
    }

    /// The face records in MongoDB, by id.
    pub fn faces(&self) -> BTreeMap<u64, Value> {
        let mut args = vec!["faces".to_string(), "--json".into()];
        args.extend(self.mongo_args());
        let out = refacen(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines().into_iter().map(|f| (f["id"].as_u64().unwrap(), f)).collect()
    }

    /// The search store's spaces, by name.
    pub fn spaces(&self) -> BTreeMap<String, Value> {
        let out = refacen(&["spaces", "--json", "--tarantool", &self.tarantool()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines().into_iter().map(|s| (s["name"].as_str().unwrap().to_string(), s)).collect()
    }

    pub fn sync(&self, extra: &[&str]) -> (i32, Value, String) {
        let mut args = vec!["sync-search".to_string(), "--json".into()];
        args.extend(self.both_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = refacen(&args);
        let summary = out.json_lines().pop().unwrap_or(Value::Null);
        (out.code, summary, out.stderr)
    }

    /// `search --json` for one photo against both stores: (exit code, nearest hits, stderr).
    pub fn search(&self, model: &str, image: &str) -> (i32, Vec<Value>, String) {
        let mut args = vec![
            "search".to_string(),
            "--json".into(),
            "--top".into(),
            "3".into(),
            "--model".into(),
            model.into(),
        ];
        args.extend(self.both_args());
        args.push(photo(image));
        let out = refacen(&args);
        let nearest =
            out.json_lines().first().and_then(|l| l["nearest"].as_array().cloned()).unwrap_or_default();
        (out.code, nearest, out.stderr)
    }
}

pub fn strings(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Faces with a facen that are not lost.
fn searchable(faces: &BTreeMap<u64, Value>) -> usize {
    faces.values().filter(|f| f["lost"] == false && !f["facen"].is_null()).count()
}

#[test]
fn regenerate_into_mongodb_and_two_tarantool_shards_equals_the_embedded_run() {
    let embedded = Uploads::new();
    assert_eq!(embedded.regenerate(&[]).0.code, 0);

    let stores = Stores::start(2);
    let uploads = Uploads::new();
    let args = stores.both_args();
    let (out, summary) = uploads.regenerate(&strings(&args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "faces_new") as usize, expected_faces());
    assert_eq!(count(&summary["search_copied"], "facens") as usize, expected_faces());
    assert!(out.stderr.contains("search store: tarantool"), "{}", out.stderr);
    assert!(!uploads.state.join("faces.redb").exists(), "with --mongo the embedded store stays unused");

    let faces = stores.faces();
    assert_eq!(faces.len(), expected_faces());
    assert_eq!(content(&faces), content(&embedded.faces()), "MongoDB holds what the embedded store holds");
    assert!(faces.values().all(|f| f["search_pending"] == false), "every copy acknowledged");

    let spaces = stores.spaces();
    let space = &spaces[DLIB_SPACE];
    assert_eq!(space["active"], true, "the first space becomes the active one");
    assert_eq!(space["count"].as_u64().unwrap() as usize, expected_faces());
    let per_shard: Vec<u64> =
        space["counts_per_shard"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    let by_parity = |parity: u64| faces.keys().filter(|id| *id % 2 == parity).count() as u64;
    assert_eq!(per_shard, vec![by_parity(0), by_parity(1)], "a face lives on shard id % 2");

    // Search through Tarantool finds what the embedded brute force finds.
    let (code, nearest, stderr) = stores.search(DLIB, "obama2.jpg");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(DLIB_SPACE), "{stderr}");
    let out = refacen(&[
        "search",
        "--json",
        "--top",
        "3",
        "--state-dir",
        &embedded.state.display().to_string(),
        &photo("obama2.jpg"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let reference = out.json_lines()[0]["nearest"].as_array().unwrap().clone();
    assert_eq!(nearest.len(), 3);
    for (got, want) in nearest.iter().zip(&reference) {
        assert_eq!(got["photo"], want["photo"]);
        let (g, w) = (got["distance"].as_f64().unwrap(), want["distance"].as_f64().unwrap());
        assert!((g - w).abs() < 1e-4, "{got} vs {want}");
    }

    // A rerun changes nothing in either store.
    let (out, summary) = uploads.regenerate(&strings(&args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "up_to_date"), 6);
    assert_eq!(stores.faces(), faces);
    assert_eq!(stores.spaces()[DLIB_SPACE]["count"], space["count"]);
}

#[test]
fn sync_search_fills_an_empty_space_resumes_a_half_filled_one_and_spreads_over_shards() {
    let stores = Stores::start(0);
    let uploads = Uploads::new();
    let (out, _) = uploads.regenerate(&strings(&stores.mongo_args()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let faces = stores.faces();
    let facens = searchable(&faces) as u64;
    assert!(facens >= 8, "{facens}");

    // Into an empty Tarantool.
    let mut one = Stores { mongo: stores.mongo, shards: vec![TarantoolServer::start()] };
    let (code, summary, stderr) = one.sync(&["--model", DLIB, "--batch-size", "3"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["copied"].as_u64(), Some(facens));
    assert_eq!(summary["space_count"].as_u64(), Some(facens));
    assert_eq!(summary["resumed_after"], Value::Null);
    assert_eq!(summary["faces_read"].as_u64(), Some(faces.len() as u64));

    // Into a half-filled one: an interrupted sync left a checkpoint after the first half, and
    // a row of a face the store no longer has.
    let half = TarantoolServer::start();
    let ids: Vec<u64> = faces.keys().copied().collect();
    let checkpoint = ids[ids.len() / 2 - 1];
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        use refacen::store::tarantool::{Checkpoint, TarantoolStore};
        let search = TarantoolStore::connect(&[half.address()]).await.unwrap();
        let space = search.ensure_space(DLIB, 128).await.unwrap();
        search.put(&space, &[(424_242, vec![0.5; 128])]).await.unwrap();
        search.begin_sync(&space, false).await.unwrap();
        let first_half: Vec<(u64, Vec<f32>)> = faces
            .values()
            .filter(|f| f["id"].as_u64().unwrap() <= checkpoint && !f["facen"].is_null())
            .map(|f| (f["id"].as_u64().unwrap(), f32s(&f["facen"]["values"])))
            .collect();
        search.put(&space, &first_half).await.unwrap();
        let copied = Checkpoint { last_id: checkpoint, facens: first_half.len() as u64 };
        search.save_checkpoint(&space, copied).await.unwrap();
    });
    one.shards = vec![half];
    let (code, summary, stderr) = one.sync(&["--model", DLIB]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["resumed_after"].as_u64(), Some(checkpoint));
    // Regression: a resume read every face again, and took as long as a full sync.
    let rest = faces.keys().filter(|id| **id > checkpoint).count() as u64;
    assert_eq!(
        summary["faces_read"].as_u64(),
        Some(rest),
        "the resume reads only the faces after its checkpoint"
    );
    assert!(rest < faces.len() as u64);
    assert_eq!(summary["facens"].as_u64(), Some(facens), "and still verifies every facen");
    let after: u64 =
        faces.values().filter(|f| f["id"].as_u64().unwrap() > checkpoint && !f["facen"].is_null()).count()
            as u64;
    assert_eq!(summary["copied"].as_u64(), Some(after), "only the second half is copied");
    assert_eq!(summary["swept"].as_u64(), Some(1), "the stale row is removed");
    assert_eq!(summary["space_count"].as_u64(), Some(facens));

    // Over two shards: each face on shard id % 2.
    one.shards = vec![TarantoolServer::start(), TarantoolServer::start()];
    let (code, summary, stderr) = one.sync(&["--model", DLIB]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["shards"].as_u64(), Some(2));
    let space = &one.spaces()[DLIB_SPACE];
    let per_shard: Vec<u64> =
        space["counts_per_shard"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    let on = |parity: u64| {
        faces.values().filter(|f| f["id"].as_u64().unwrap() % 2 == parity && !f["facen"].is_null()).count()
            as u64
    };
    assert_eq!(per_shard, vec![on(0), on(1)]);

    // A model the store has no facens of is a clear error.
    let (code, _, stderr) = one.sync(&["--model", "no-such-model"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("holds no facens of model `no-such-model`"), "{stderr}");
}

#[test]
fn a_new_model_is_searched_only_once_activated_and_the_old_space_dropped_on_request() {
    let stores = Stores::start(1);
    let uploads = Uploads::new();
    let args = stores.both_args();
    assert_eq!(uploads.regenerate(&strings(&args)).0.code, 0);

    // The second model's facens go to their own space while search stays on the first.
    let toy = test_guest("toy-embedder").display().to_string();
    let mut facens_args = args.clone();
    facens_args.extend(["--regenerate".into(), "facens".into(), "--model".into(), toy.clone()]);
    let (out, summary) = uploads.regenerate(&strings(&facens_args));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary["search_copied"], "facens") as usize, expected_faces());
    let spaces = stores.spaces();
    assert_eq!(spaces["facens_toy_embedder_16"]["active"], false);
    assert_eq!(spaces[DLIB_SPACE]["active"], true);

    let (code, nearest, stderr) = stores.search(DLIB, "obama2.jpg");
    assert_eq!(code, 0, "the old space still answers: {stderr}");
    assert_eq!(nearest[0]["photo"], "2024/obama2.jpg");
    let (code, _, stderr) = stores.search(&toy, "obama2.jpg");
    assert_eq!(code, 2);
    assert!(stderr.contains("holds facens of model `dlib-resnet-128`"), "{stderr}");

    let (code, summary, stderr) = stores.sync(&["--model", "toy-embedder", "--activate"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["activated"], true);
    let (code, nearest, stderr) = stores.search(&toy, "obama2.jpg");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(nearest[0]["photo"], "2024/obama2.jpg");
    assert!(stderr.contains("facens_toy_embedder_16"), "{stderr}");
    let (code, _, stderr) = stores.search(DLIB, "obama2.jpg");
    assert_eq!(code, 2, "{stderr}");
    assert!(stores.spaces().contains_key(DLIB_SPACE), "the old space stays until --drop-inactive");

    let (code, summary, stderr) = stores.sync(&["--model", "toy-embedder", "--drop-inactive"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["dropped"], serde_json::json!([DLIB_SPACE]));
    assert_eq!(stores.spaces().keys().collect::<Vec<_>>(), vec!["facens_toy_embedder_16"]);
}

#[test]
fn unreachable_stores_are_reported_before_any_work() {
    let uploads = Uploads::new();
    for (flag, address, expected) in [
        (
            "--mongo",
            format!("mongodb://127.0.0.1:{}/?directConnection=true", closed_port()),
            "does not answer",
        ),
        ("--tarantool", format!("127.0.0.1:{}", closed_port()), "127.0.0.1:"),
    ] {
        let started = Instant::now();
        let out = refacen(&[
            "regenerate",
            "--uploads",
            &uploads.dir.display().to_string(),
            "--state-dir",
            &uploads.state.display().to_string(),
            flag,
            &address,
        ]);
        assert_eq!(out.code, 2, "{flag}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{flag}: {}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(30), "{flag}: took {:?}", started.elapsed());
        assert!(!uploads.state.join("files").exists(), "{flag}: files were written");
    }
}

#[test]
fn a_tarantool_restart_during_a_run_loses_nothing() {
    let stores = Stores::start(1);
    // Three times the photos, so that the run is still going when the shard goes down.
    let uploads = Uploads::with_copies(3);
    let mut args = uploads.args(&["--concurrency", "1"]);
    args.extend(stores.both_args());
    let mut child = crate::support::refacen_command(&args).spawn().unwrap();

    // Once the first facens are in, take the shard down for a second.
    let mut shard = stores.shards.into_iter().next().unwrap();
    let started = Instant::now();
    let probe = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    loop {
        let count = probe.block_on(async {
            let search = refacen::store::tarantool::TarantoolStore::connect(&[shard.address()]).await.ok()?;
            search.count(DLIB_SPACE).await.ok()
        });
        if count.is_some_and(|c| c > 0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no facen reached Tarantool");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.try_wait().unwrap().is_none(), "the run ended before the restart could test anything");
    shard.kill();
    std::thread::sleep(Duration::from_secs(1));
    shard.start_again();

    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stores = Stores { mongo: stores.mongo, shards: vec![shard] };
    let faces = stores.faces();
    assert_eq!(faces.len(), 3 * expected_faces(), "no face lost or duplicated");
    assert!(faces.values().all(|f| f["search_pending"] == false));
    assert_eq!(stores.spaces()[DLIB_SPACE]["count"].as_u64().unwrap() as usize, searchable(&faces));
}

#[test]
fn a_write_the_server_rejects_stops_the_run_with_its_cause_and_a_rerun_finishes() {
    let stores = Stores::start(0);
    let uploads = Uploads::new();
    // An index the operator added by mistake: at most one face per photo.
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let faces = tokio.block_on(async {
        let client = mongodb::Client::with_uri_str(stores.mongo.uri()).await.unwrap();
        let faces = client.database("faces_test").collection::<mongodb::bson::Document>("faces");
        let unique = mongodb::options::IndexOptions::builder()
            .unique(true)
            .name("one_face_per_photo".to_string())
            .build();
        let index =
            mongodb::IndexModel::builder().keys(mongodb::bson::doc! { "photo": 1 }).options(unique).build();
        faces.create_index(index).await.unwrap();
        faces
    });
    let (out, summary) = uploads.regenerate(&strings(&stores.mongo_args()));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("the server refused") && out.stderr.contains("E11000"), "{}", out.stderr);
    assert!(out.stderr.contains("run the same command again to finish"), "{}", out.stderr);
    let committed = count(&summary, "done");

    tokio.block_on(async { faces.drop_index("one_face_per_photo").await.unwrap() });
    let (out, summary) = uploads.regenerate(&strings(&stores.mongo_args()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        count(&summary, "up_to_date"),
        committed,
        "photos committed before the failure stay: {summary}"
    );
    assert_eq!(stores.faces().len(), expected_faces(), "every face, once");
}
