//! What an operator meets around the work itself (regressions of issue 20): a reader that
//! closes stdout, a database server that stops answering and comes back (or does not), a
//! login MongoDB refuses, search's default model, and a second refacen on one state directory.
//! Real servers (tests/e2e/servers.rs), real processes, real pipes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use refacen::store::tarantool::TarantoolStore;
use refacen::store::{DetectorProvenance, FaceRecord, FaceStore, Facen, ModelProvenance, MongoStore};

use crate::regenerate::Uploads;
use crate::servers::{MongoServer, TarantoolServer};
use crate::support::{Output, photo, refacen, refacen_command};
use refacen_test_support::records::photo_record;

fn run_with_stdout_closed(args: &[String]) -> Output {
    let mut child = refacen_command(args).spawn().expect("refacen starts");
    // The reader goes away before refacen has written anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("refacen ends");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Regression: `refacen faces --json | head` panicked with `failed printing to stdout: Broken
/// pipe` and a backtrace.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let uploads = Uploads::of(&["obama.jpg"]);
    let (out, _) = uploads.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let state = uploads.state.display().to_string();
    let commands: Vec<Vec<String>> = vec![
        vec!["faces".into(), "--state-dir".into(), state.clone()],
        vec!["faces".into(), "--json".into(), "--state-dir".into(), state.clone()],
        vec!["detect".into(), photo("obama.jpg"), photo("biden.jpg")],
        vec!["detect".into(), "--json".into(), photo("obama.jpg")],
        vec!["guests".into()],
        vec!["search".into(), "--state-dir".into(), state.clone(), photo("obama2.jpg")],
        // Up to date: all it does is print its summary.
        uploads.args(&[]),
    ];
    for args in commands {
        let out = run_with_stdout_closed(&args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        for noise in ["panicked", "Broken pipe", "error:"] {
            assert!(!out.stderr.contains(noise), "{args:?} said {noise:?}: {}", out.stderr);
        }
    }
}

/// `count` face records of one model in MongoDB, 100 faces a photo.
fn fill_mongo(uri: &str, database: &str, count: u64) {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let store = MongoStore::connect(uri, database).await.unwrap();
        let model = ModelProvenance {
            name: "outage-model".into(),
            version: "1".into(),
            sha256: "0".repeat(64),
            facen_size: 8,
        };
        let detector = DetectorProvenance {
            name: "outage-detector".into(),
            version: "1".into(),
            sha256: "0".repeat(64),
            params: BTreeMap::new(),
        };
        for photo in 0..count.div_ceil(100) {
            let path = format!("photo-{photo:05}.jpg");
            let ids = store.allocate_ids(&path, 100.min(count - photo * 100) as usize).await.unwrap();
            let faces: Vec<FaceRecord> = ids
                .iter()
                .map(|&id| FaceRecord {
                    id,
                    photo: path.clone(),
                    orientation: Some(1),
                    bbox: [0.0, 0.0, 50.0, 50.0],
                    score: 0.9,
                    landmarks: [[10.0, 10.0]; 5],
                    normalized: None,
                    thumbnail: None,
                    facen: Some(Facen {
                        values: (0..8).map(|i| (id * 8 + i) as f32).collect(),
                        model: model.clone(),
                        at: 0,
                    }),
                    lost: false,
                    detector: detector.clone(),
                    detected_at: 0,
                    search_pending: false,
                })
                .collect();
            store.commit_photo(photo_record(path, ids, &detector), faces).await.unwrap();
        }
    });
}

/// `sync-search --json` from `mongo` into the shard at `shard`, with `outage` run once its
/// first facens are in: its exit code, summary and stderr.
fn sync_through(
    mongo: &str,
    shard: &str,
    extra: &[&str],
    outage: impl FnOnce(),
) -> (i32, serde_json::Value, String) {
    let mut args: Vec<String> =
        ["sync-search", "--json", "--model", "outage-model", "--mongo", mongo].map(String::from).to_vec();
    args.extend(["--mongo-db".into(), "outage".into(), "--tarantool".into(), shard.into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut child = refacen_command(&args).spawn().unwrap();
    let probe = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = Instant::now();
    loop {
        let count = probe.block_on(async {
            let search = TarantoolStore::connect(&[shard.to_string()]).await.ok()?;
            search.count("facens_outage_model_8").await.ok()
        });
        assert!(child.try_wait().unwrap().is_none(), "the sync ended before the outage could test anything");
        if count.is_some_and(|c| c > 0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no facen reached Tarantool");
        std::thread::sleep(Duration::from_millis(20));
    }
    outage();
    let out = child.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map_or(serde_json::Value::Null, |l| serde_json::from_str(l).unwrap());
    (out.status.code().unwrap_or(-1), summary, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Checks that refacen said two things of `server`: that retries for `window_s` started, and
/// then `ending`.
fn assert_outage_told(stderr: &str, server: &str, window_s: u64, ending: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&format!("refacen: {server} "))).collect();
    assert_eq!(lines.len(), 2, "one line when retries start, one when they end: {stderr}");
    assert!(lines[0].contains("does not answer ("), "{stderr}");
    assert!(lines[0].contains(&format!("retrying for up to {window_s} s")), "{stderr}");
    assert!(lines[1].contains(ending), "{stderr}");
}

/// Syncs `faces` faces from `mongo` to `shard` through an `outage` of `server` (it brings the
/// server down and back within the default retry window): the sync ends well, stderr tells of
/// the outage, and no facen is lost.
fn sync_survives(mongo: &str, shard: &str, server: &str, faces: u64, outage: impl FnOnce()) {
    let (code, summary, stderr) = sync_through(mongo, shard, &["--batch-size", "100"], outage);
    assert_eq!(code, 0, "{stderr}");
    assert_outage_told(&stderr, server, 20, "answers again, after");
    assert_eq!(summary["space_count"].as_u64(), Some(faces), "nothing lost: {summary}");
}

/// Regression: a Tarantool shard or MongoDB that stopped answering looked like a hang of
/// 20-58 s without a word, and MongoDB was retried for ~58 s where README promised ~20.
#[test]
fn an_outage_is_logged_when_retries_start_and_when_the_server_answers_again() {
    const FACES: u64 = 4000;
    let mut mongo = MongoServer::start();
    fill_mongo(&mongo.uri(), "outage", FACES);
    let uri = mongo.uri();

    // A Tarantool shard killed mid-sync and started again a second and a half later.
    let mut shard = TarantoolServer::start();
    let address = shard.address();
    sync_survives(&uri, &address, &format!("tarantool {address}"), FACES, || {
        shard.kill();
        std::thread::sleep(Duration::from_millis(1500));
        shard.start_again();
    });

    // MongoDB killed mid-sync, for longer than one attempt waits for it, then started again.
    let fresh = TarantoolServer::start();
    sync_survives(&uri, &fresh.address(), &format!("mongodb {uri} (database outage)"), FACES, || {
        mongo.kill();
        std::thread::sleep(Duration::from_secs(7));
        mongo.start_again();
    });

    // A shard that does not come back: retries give up after --store-retry-s, said once.
    let mut gone = TarantoolServer::start();
    let address = gone.address();
    let extra = ["--batch-size", "100", "--store-retry-s", "3"];
    let (code, _, stderr) = sync_through(&uri, &address, &extra, || gone.kill());
    assert_eq!(code, 2, "{stderr}");
    assert_outage_told(&stderr, &format!("tarantool {address}"), 3, "gave up after 3 s of retries");
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(error.contains(&address) && error.contains("(retried for 3 s)"), "{stderr}");
}

/// Regression: a MongoDB login failure printed a 500-character driver dump that opened with
/// "the server does not answer".
#[test]
fn a_refused_mongodb_login_is_one_line_naming_the_server_the_user_and_what_to_check() {
    // A server that checks logins, with a user `app` of database admin that may use `faces`.
    let mongo = MongoServer::start_checking_logins();
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let client = mongodb::Client::with_uri_str(mongo.uri()).await.unwrap();
        let user = mongodb::bson::doc! {
            "createUser": "app",
            "pwd": "right-password",
            "roles": [{ "role": "readWrite", "db": "faces" }],
        };
        client.database("admin").run_command(user).await.unwrap();
    });

    let wrong = mongo.uri_as("app", "s3cret", "admin");
    let out = refacen(&["faces", "--mongo", &wrong, "--mongo-db", "faces"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let error =
        out.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{}", out.stderr));
    let server = wrong.replace("s3cret", "***");
    assert!(error.contains(&format!("mongodb {server} (database faces)")), "{error}");
    assert!(error.contains("user 'app' cannot log in (authentication failed)"), "{error}");
    assert!(error.contains("check the user name and password") && error.contains("'admin'"), "{error}");
    assert!(!error.contains("does not answer") && !error.contains("Topology"), "{error}");
    assert!(error.len() < 300, "one line, not a dump: {error}");
    assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
    // -v adds the driver's own error.
    let out = refacen(&["faces", "-v", "--mongo", &wrong, "--mongo-db", "faces"]);
    out.assert_refused(&["SCRAM"]);
    assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);

    // The right password is let in.
    let right = mongo.uri_as("app", "right-password", "admin");
    let out = refacen(&["faces", "--mongo", &right, "--mongo-db", "faces"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // smongo-wire refuses every login, with the same answer (AuthenticationFailed).
    let refusing = MongoServer::start();
    let out = refacen(&["faces", "--mongo", &refusing.uri_as("app", "right-password", "admin")]);
    out.assert_refused(&["user 'app' cannot log in (authentication failed)"]);
}

/// Regression: search used dlib-resnet-128 unless told otherwise, even where the stores held
/// only another model's facens.
#[test]
fn search_uses_the_model_of_the_stored_facens_by_default() {
    let shard = TarantoolServer::start();
    let uploads = Uploads::of(&["obama.jpg", "biden.jpg"]);
    let (out, _) = uploads.regenerate(&["--model", "facenet-512", "--tarantool", &shard.address()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let state = uploads.state.display().to_string();
    let address = shard.address();
    let searches = [
        vec!["search", "--json", "--state-dir", &state],
        vec!["search", "--json", "--state-dir", &state, "--tarantool", &address],
    ];
    for args in searches {
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.push(photo("obama2.jpg"));
        let out = refacen(&args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("model `facenet-512`"), "{args:?}: {}", out.stderr);
        let nearest = &out.json_lines()[0]["nearest"][0];
        assert_eq!(nearest["photo"], "obama.jpg", "{args:?}: {}", out.stdout);
    }
}

/// Regression: a second refacen on one embedded store got `Database already open. Cannot
/// acquire lock.`
#[test]
fn a_second_refacen_on_one_state_directory_is_told_which_one_works_there() {
    let uploads = Uploads::new();
    let mut first = refacen_command(&uploads.args(&[])).spawn().unwrap();
    let holder = uploads.state.join("faces.redb.holder");
    let started = Instant::now();
    while !holder.exists() {
        assert!(first.try_wait().unwrap().is_none(), "regenerate ended before it could be raced");
        assert!(started.elapsed() < Duration::from_secs(120), "regenerate never opened its store");
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = uploads.state.display().to_string();
    let out = refacen(&["faces", "--state-dir", &state]);
    assert!(first.try_wait().unwrap().is_none(), "regenerate ended while it was raced");
    assert_eq!(out.code, 2, "{}", out.stderr);
    let error =
        out.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{}", out.stderr));
    let expected = format!("{state}: another refacen (`refacen regenerate`, pid {}", first.id());
    assert!(error.contains(&expected), "{error}");
    assert!(error.contains("wait for it to finish or stop it"), "{error}");
    assert!(!error.contains("Cannot acquire lock"), "{error}");

    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Once it has ended, the store opens again.
    let out = refacen(&["faces", "--state-dir", &state]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
