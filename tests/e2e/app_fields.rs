//! Fields an application keeps on refacen's MongoDB records survive every write refacen makes:
//! re-detection (another detector, stricter settings that lose faces), a model switch,
//! `sync-search`, and runs killed part way then run again.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Collection, Database};

use crate::regenerate::{Uploads, count};
use crate::stores::{Stores, strings};
use crate::support::{refacen_command, test_guest};

/// What an application adds to each face: a person in `meta`, galleries, a flag.
fn face_fields(id: &Bson) -> Document {
    doc! {
        "meta": { "person": format!("person of {id}"), "confirmed_by": "operator" },
        "galleries": ["staff", "visitors"],
        "watchlist": true,
    }
}

/// What an application adds to each photo.
fn photo_fields(id: &Bson) -> Document {
    doc! { "meta": { "album": format!("album of {id}") }, "reviewed": true }
}

/// Runs `f` on the test's database, on a runtime of its own.
fn with_db<T>(stores: &Stores, f: impl AsyncFnOnce(Database) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = mongodb::Client::with_uri_str(stores.mongo_uri()).await.unwrap();
        f(client.database("faces_test")).await
    })
}

/// Every document of `collection` by `_id`.
async fn documents(db: &Database, collection: &str) -> BTreeMap<String, Document> {
    let collection: Collection<Document> = db.collection(collection);
    let mut cursor = collection.find(doc! {}).await.unwrap();
    let mut documents = BTreeMap::new();
    while cursor.advance().await.unwrap() {
        let document = cursor.deserialize_current().unwrap();
        documents.insert(document.get("_id").unwrap().to_string(), document);
    }
    documents
}

/// Adds the application's fields to every document of `collection`; returns their ids.
async fn add_fields(db: &Database, collection: &str, fields: fn(&Bson) -> Document) -> Vec<String> {
    let documents = documents(db, collection).await;
    let handle: Collection<Document> = db.collection(collection);
    for document in documents.values() {
        let id = document.get("_id").unwrap();
        handle.update_one(doc! { "_id": id.clone() }, doc! { "$set": fields(id) }).await.unwrap();
    }
    documents.into_keys().collect()
}

/// Asserts that every document of `ids` still has the application's fields, as written.
async fn assert_fields_kept(
    db: &Database,
    collection: &str,
    ids: &[String],
    fields: fn(&Bson) -> Document,
    after: &str,
) {
    let documents = documents(db, collection).await;
    for id in ids {
        let document =
            documents.get(id).unwrap_or_else(|| panic!("{collection} {id} vanished after {after}"));
        for (key, value) in fields(document.get("_id").unwrap()) {
            assert_eq!(
                document.get(&key),
                Some(&value),
                "{collection} {id}: `{key}` after {after}: {document}"
            );
        }
    }
}

#[test]
fn application_fields_survive_redetection_a_model_switch_sync_and_killed_runs() {
    let stores = Stores::start(1);
    let uploads = Uploads::new();
    let args = stores.both_args();
    let run = |extra: &[&str], what: &str| {
        let mut all = strings(&args);
        all.extend(extra);
        let (out, summary) = uploads.regenerate(&all);
        assert_eq!(out.code, 0, "{what}: {}", out.stderr);
        summary
    };
    run(&[], "the first run");
    let (faces, photos) = with_db(&stores, async |db| {
        (add_fields(&db, "faces", face_fields).await, add_fields(&db, "photos", photo_fields).await)
    });
    assert!(!faces.is_empty() && photos.len() == 6, "{faces:?} {photos:?}");
    let check = |after: &str| {
        with_db(&stores, async |db| {
            assert_fields_kept(&db, "faces", &faces, face_fields, after).await;
            assert_fields_kept(&db, "photos", &photos, photo_fields, after).await;
        })
    };

    // Stricter settings: the weaker faces are marked lost, the others re-detected in place.
    let summary = run(&["--param", "o-net-thresh=0.95"], "a stricter re-detection");
    assert!(count(&summary, "faces_lost") > 0, "{summary}");
    check("a re-detection that lost faces");
    let lost = with_db(&stores, async |db| {
        documents(&db, "faces").await.values().filter(|f| f.get_bool("lost") == Ok(true)).count()
    });
    assert!(lost > 0, "some faces carrying the application's fields are lost now");

    run(&["--detector", "dlib"], "a re-detection with the dlib detector");
    check("a re-detection with another detector");

    let toy = test_guest("toy-embedder").display().to_string();
    let summary = run(&["--regenerate", "facens", "--model", &toy], "a model switch");
    assert!(count(&summary, "facens") > 0, "{summary}");
    check("a model switch");

    let (code, _, stderr) = stores.sync(&["--model", "toy-embedder", "--activate", "--restart"]);
    assert_eq!(code, 0, "{stderr}");
    check("sync-search");

    // Back to the first detector, killed part way through a few times, then run to the end.
    let mut back = uploads.args(&[]);
    back.extend(args.iter().cloned());
    for after_ms in [400, 900, 1500, 2500] {
        let mut child = refacen_command(&back).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(after_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    run(&[], "a rerun after killed runs");
    check("killed runs and a rerun");
}
