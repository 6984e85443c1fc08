//! The contract with cluster schedulers, with real processes against real servers (smongo and
//! Tarantool): shards that run at once, are SIGKILLed and restarted with the same index (as
//! a Kubernetes Job controller or Slurm requeue does) while photos arrive in Uploads, end
//! with the stores a single process would have written; `status` tells how far it is; and
//! scoped runs (`--photos`, `--include`, `--exclude`) take what they name on a nested Uploads.
//!
//! `scripts/bench-shards` runs a larger variant and prints what 4 shards cost against 1
//! process on the same machine.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use refacen::imaging::decode_rgb;
use serde_json::Value;

use crate::regenerate::{Uploads, content, count};
use crate::stores::{Stores, strings};
use crate::support::{photos, refacen, refacen_command};
use crate::synthetic::synthetic_photo;

const DLIB_SPACE: &str = "facens_dlib_resnet_128_128";
const SHARDS: usize = 4;

fn sample_photos() -> Vec<image::RgbImage> {
    let mut paths: Vec<_> = std::fs::read_dir(photos()).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|p| decode_rgb(p, &Default::default()).unwrap()).collect()
}

/// The Uploads-relative path of synthetic photo `i`: nested folders, and a name that is not
/// UTF-8 now and then.
fn photo_path(i: usize) -> Vec<u8> {
    let mut path = format!("set{}/day{}/", i % 3, (i / 3) % 2).into_bytes();
    if i % 11 == 7 {
        // Latin-1, as old cameras and Windows shares write it.
        path.extend_from_slice(b"caf\xe9-");
        path.extend_from_slice(format!("{i:03}.jpg").as_bytes());
    } else {
        path.extend_from_slice(format!("photo-{i:03}.jpg").as_bytes());
    }
    path
}

/// Writes synthetic photos `range` into `uploads` (each through a temporary name, as an
/// application that uploads a photo does).
fn add_photos(samples: &[image::RgbImage], uploads: &Path, range: std::ops::Range<usize>) {
    for i in range {
        let path = uploads.join(std::ffi::OsStr::from_bytes(&photo_path(i)));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let partial = uploads.parent().unwrap().join(format!("incoming-{i}.jpg"));
        let photo = synthetic_photo(samples, i, 0.25);
        let mut file = std::io::BufWriter::new(std::fs::File::create(&partial).unwrap());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 90).encode_image(&photo).unwrap();
        file.flush().unwrap();
        drop(file);
        std::fs::rename(&partial, &path).unwrap();
    }
}

/// An Uploads of `count` synthetic photos, a damaged photo and a junk file, beside a state dir.
struct ClusterUploads(Uploads);

impl ClusterUploads {
    fn new(samples: &[image::RgbImage], count: usize) -> Self {
        let uploads = Uploads::of(&[]);
        let dir = &uploads.dir;
        std::fs::create_dir_all(dir.join("set1")).unwrap();
        add_photos(samples, dir, 0..count);
        std::fs::write(dir.join("set1/damaged.jpg"), b"\xff\xd8\xff\xe0 not the rest of a JPEG").unwrap();
        std::fs::write(dir.join("set1/.DS_Store"), b"junk").unwrap();
        ClusterUploads(uploads)
    }

    fn args(&self, stores: &Stores, extra: &[&str]) -> Vec<String> {
        let mut args = stores.both_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        self.0.args(&strings(&args))
    }

    fn status(&self, stores: &Stores) -> Value {
        let mut args = vec!["status", "--json", "--uploads"];
        let uploads = self.0.dir.display().to_string();
        let state = self.0.state.display().to_string();
        args.push(&uploads);
        args.extend(["--state-dir", &state]);
        let mongo = stores.mongo_args();
        args.extend(strings(&mongo));
        let out = refacen(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines().pop().unwrap()
    }
}

/// How shard `k` learns its index: from a Kubernetes Indexed Job's environment, a Slurm
/// array's, or the flag.
fn shard_process(uploads: &ClusterUploads, stores: &Stores, k: usize, log: &Path) -> Child {
    let flag = format!("{k}/{SHARDS}");
    let extra: Vec<&str> = if k == 3 { vec!["--shard", &flag] } else { vec![] };
    let mut command = refacen_command(&uploads.args(stores, &extra));
    match k {
        0 | 1 => {
            command.env("JOB_COMPLETION_INDEX", k.to_string()).env("REFACEN_SHARDS", SHARDS.to_string());
        }
        2 => {
            // Task 3 of `sbatch --array=1-4`.
            command
                .env("SLURM_ARRAY_TASK_ID", (k + 1).to_string())
                .env("SLURM_ARRAY_TASK_MIN", "1")
                .env("SLURM_ARRAY_TASK_MAX", SHARDS.to_string());
        }
        _ => {}
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    command.stdout(Stdio::null()).stderr(Stdio::from(file));
    command.spawn().unwrap()
}

/// A small random generator, seeded from the clock (the seed is printed to replay a failure).
struct Chance(u64);

impl Chance {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Runs the 4 shards at once, SIGKILLs random ones `kills` times and restarts them with the
/// same index, adds `added` photos after the first kill; returns the exit codes and the logs.
fn chaos_run(
    uploads: &ClusterUploads,
    stores: &Stores,
    samples: &[image::RgbImage],
    kills: u64,
    added: std::ops::Range<usize>,
) -> (Vec<Option<i32>>, Vec<String>, u64) {
    let seed = std::env::var("REFACEN_CLUSTER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("cluster: chaos seed {seed} (REFACEN_CLUSTER_SEED replays it)");
    let mut chance = Chance(seed);
    let logs_dir = tempfile::tempdir().unwrap();
    let logs: Vec<PathBuf> = (0..SHARDS).map(|k| logs_dir.path().join(format!("shard-{k}.log"))).collect();
    let mut children: Vec<Option<Child>> =
        (0..SHARDS).map(|k| Some(shard_process(uploads, stores, k, &logs[k]))).collect();
    let mut codes = vec![None; SHARDS];
    let mut killed = 0u64;
    let mut added_yet = false;
    let started = Instant::now();
    loop {
        for k in 0..SHARDS {
            if let Some(child) = children[k].as_mut()
                && let Some(status) = child.try_wait().unwrap()
            {
                codes[k] = status.code();
                children[k] = None;
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "the shards did not finish in 15 minutes");
        std::thread::sleep(Duration::from_millis(1000 + chance.next(2000)));
        let running: Vec<usize> = (0..SHARDS).filter(|&k| children[k].is_some()).collect();
        if killed < kills && !running.is_empty() {
            let k = running[chance.next(running.len() as u64) as usize];
            let mut child = children[k].take().unwrap();
            child.kill().unwrap(); // SIGKILL: nothing of the process runs after it
            child.wait().unwrap();
            killed += 1;
            eprintln!("cluster: killed shard {k} at {:.1} s; restarting it", started.elapsed().as_secs_f64());
            children[k] = Some(shard_process(uploads, stores, k, &logs[k]));
            if !added_yet {
                add_photos(samples, &uploads.0.dir, added.clone());
                added_yet = true;
            }
        }
    }
    if !added_yet {
        add_photos(samples, &uploads.0.dir, added);
    }
    let logs = logs.iter().map(|l| std::fs::read_to_string(l).unwrap()).collect();
    (codes, logs, killed)
}

/// Runs the 4 shards at once to the end, as a rerun of the Job does: (exit codes, summaries).
fn clean_run(uploads: &ClusterUploads, stores: &Stores) -> Vec<(Option<i32>, Value)> {
    let children: Vec<Child> = (0..SHARDS)
        .map(|k| {
            let shard = format!("{k}/{SHARDS}");
            refacen_command(&uploads.args(stores, &["--shard", &shard])).spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let summary = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).next_back();
            let summary =
                summary.unwrap_or_else(|| panic!("no summary: {}", String::from_utf8_lossy(&out.stderr)));
            (out.status.code(), summary)
        })
        .collect()
}

/// Each face's own facen finds it in Tarantool at distance 0 (among the nearest few: tiles
/// of the generated photos repeat, and so do their faces' facens).
fn search_finds_every_face(stores: &Stores, faces: &BTreeMap<u64, Value>) {
    use refacen::store::tarantool::{Metric, TarantoolStore};
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let search = TarantoolStore::connect(&[stores.tarantool()]).await.unwrap();
        for (id, face) in faces.iter().filter(|(_, f)| f["lost"] == false) {
            let facen = crate::support::f32s(&face["facen"]["values"]);
            let hits = search.search(DLIB_SPACE, &facen, 8, Metric::L2).await.unwrap();
            assert!(hits.iter().any(|&(hit, distance)| hit == *id && distance < 1e-4), "face {id}: {hits:?}");
        }
    });
}

fn photos_env(default: usize) -> usize {
    std::env::var("REFACEN_CLUSTER_PHOTOS").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

#[test]
fn shards_killed_and_restarted_while_photos_arrive_end_with_what_one_process_writes() {
    let samples = sample_photos();
    let (first, extra) = (photos_env(40), 8);
    let all = first + extra;

    // One process over every photo.
    let single_stores = Stores::start(1);
    let single = ClusterUploads::new(&samples, all);
    let started = Instant::now();
    let out = refacen(&single.args(&single_stores, &[]));
    let single_s = started.elapsed().as_secs_f64();
    assert_eq!(out.code, 1, "the damaged photo fails, nothing else: {}", out.stderr);
    let summary = out.json_lines().pop().unwrap();
    assert_eq!((count(&summary, "done"), count(&summary, "failed")), (all as u64, 1), "{summary}");

    // Four shards, killed and restarted at random, while photos arrive.
    let stores = Stores::start(1);
    let uploads = ClusterUploads::new(&samples, first);
    let started = Instant::now();
    let (codes, logs, killed) = chaos_run(&uploads, &stores, &samples, 3, first..all);
    assert!(killed >= 1, "the shards ended before any was killed: give REFACEN_CLUSTER_PHOTOS more");
    let chaos_s = started.elapsed().as_secs_f64();
    for (k, log) in logs.iter().enumerate() {
        assert!(codes[k] == Some(0) || codes[k] == Some(1), "shard {k} ended with {:?}: {log}", codes[k]);
        let source = ["Kubernetes Indexed Job", "Kubernetes Indexed Job", "Slurm job array", "--shard"][k];
        let first_line = log.lines().next().unwrap_or_default();
        assert!(
            first_line.contains(&format!("shard {k}/{SHARDS}")) && first_line.contains(source),
            "shard {k}'s first line names its source: {log}"
        );
    }
    // Photos that arrived after a shard's walk passed their place are the next run's, as
    // with a Job run again; `status` counts them as to do until then.
    let before = uploads.status(&stores);
    assert_eq!(count(&before, "total"), all as u64 + 1, "{before}");
    assert_eq!(count(&before, "done") + count(&before, "to_do"), count(&before, "total"), "{before}");
    let rerun = clean_run(&uploads, &stores);
    let selected: u64 = rerun.iter().map(|(_, s)| count(s, "selected")).sum();
    let done_again: u64 = rerun.iter().map(|(_, s)| count(s, "done")).sum();
    assert_eq!(done_again, count(&before, "to_do") - 1, "the rerun regenerates only what was left");
    // Every file is in exactly one shard: the shards' selections add up to Uploads.
    assert_eq!(selected, all as u64 + 2, "photos, the damaged one and the junk file: {rerun:?}");
    assert_eq!(rerun.iter().map(|(_, s)| count(s, "skipped")).sum::<u64>(), 1);
    assert_eq!(rerun.iter().map(|(_, s)| count(s, "failed")).sum::<u64>(), 1);

    // The same stores as the single process's: photos, faces, boxes and facens; no face twice.
    let (faces, reference) = (stores.faces(), single_stores.faces());
    assert_eq!(faces.len(), reference.len(), "no face recorded twice after the kills");
    assert_eq!(content(&faces), content(&reference));
    assert_eq!(content(&faces).len(), faces.len(), "one record per face");
    assert!(faces.values().all(|f| f["lost"] == false && f["search_pending"] == false));
    let photos: BTreeSet<&str> = faces.values().map(|f| f["photo"].as_str().unwrap()).collect();
    assert!(photos.iter().any(|p| p.contains("//")), "a name that is not UTF-8 is among them: {photos:?}");
    let spaces = (stores.spaces(), single_stores.spaces());
    assert_eq!(spaces.0[DLIB_SPACE]["count"].as_u64(), Some(faces.len() as u64));
    assert_eq!(spaces.0[DLIB_SPACE]["count"], spaces.1[DLIB_SPACE]["count"]);
    search_finds_every_face(&stores, &faces);

    // status: everything done but the damaged photo, which it names with its cause.
    let status = uploads.status(&stores);
    assert_eq!(
        (count(&status, "total"), count(&status, "done"), count(&status, "to_do"), count(&status, "failed")),
        (all as u64 + 1, all as u64, 1, 1),
        "{status}"
    );
    let failed = &status["failed_items"][0];
    assert!(failed["item"].as_str().unwrap().ends_with("damaged.jpg"), "{status}");
    assert!(!failed["cause"].as_str().unwrap().is_empty(), "{status}");
    assert_eq!(count(&status, "faces_current"), faces.len() as u64);
    assert_eq!((count(&status, "faces_lost"), count(&status, "search_pending")), (0, 0));
    // Counted by the runs as they committed: a kill can take the last seconds' counts along.
    assert!((1..=faces.len() as u64).contains(&count(&status, "faces_new")), "{status}");
    let shards = status["shards"].as_array().unwrap();
    let names: BTreeSet<&str> = shards.iter().map(|s| s["shard"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        (0..SHARDS)
            .map(|k| format!("{k}/{SHARDS}"))
            .collect::<BTreeSet<_>>()
            .iter()
            .map(String::as_str)
            .collect()
    );
    assert!(
        shards.iter().all(|s| s["finished"] == true && s["host"].as_str().is_some_and(|h| !h.is_empty()))
    );
    let runs: u64 = shards.iter().map(|s| count(s, "runs")).sum();
    // A process killed before it wrote its first record leaves no trace of that run.
    assert!(
        (2 * SHARDS as u64..=2 * SHARDS as u64 + killed).contains(&runs),
        "a first run, the restarts and a rerun: {status}"
    );
    eprintln!(
        "cluster: {all} photos: one process {single_s:.1} s; 4 shards with {killed} kills {chaos_s:.1} s"
    );
}

/// `--photos` and `--include`/`--exclude` on a nested Uploads (the sample photos, three of
/// them in `2024/`): a run takes what they name and nothing else, with shards too.
#[test]
fn scoped_runs_take_one_photo_a_folder_or_a_list_and_refuse_paths_outside_uploads() {
    let uploads = Uploads::new();
    let photos_of = |uploads: &Uploads| -> BTreeSet<String> {
        uploads.faces().values().map(|f| f["photo"].as_str().unwrap().to_string()).collect()
    };

    // A folder, split over two shards.
    let (out, first) = uploads.regenerate(&["--include", "2024/**", "--shard", "0/2"]);
    assert!(out.code == 0, "{}", out.stderr);
    let (out, second) = uploads.regenerate(&["--include", "2024/**", "--shard", "1/2"]);
    assert!(out.code == 0, "{}", out.stderr);
    assert_eq!(count(&first, "selected") + count(&second, "selected"), 3);
    let done = photos_of(&uploads);
    assert!(!done.is_empty() && done.iter().all(|p| p.starts_with("2024/")), "{done:?}");

    // A list on stdin: one photo of the top folder, a path with `./`, and a blank line.
    let mut top: Vec<String> = std::fs::read_dir(&uploads.dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    let mut child = refacen_command(&uploads.args(&["--photos", "-"])).stdin(Stdio::piped()).spawn().unwrap();
    write!(child.stdin.take().unwrap(), "./{}\n\n", top[0]).unwrap();
    let out = child.wait_with_output().unwrap();
    let summary: Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').find(|l| !l.is_empty()).unwrap()).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&summary, "selected"), 1);
    assert!(photos_of(&uploads).contains(&top[0]));
    assert!(!photos_of(&uploads).iter().any(|p| top[1..].contains(p)), "only the listed photo");

    // --exclude leaves out what --include takes; the rest of the top folder is done.
    let (out, summary) = uploads.regenerate(&["--exclude", "2024/**", "--exclude", &top[0]]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "selected"), top.len() as u64 - 1);
    assert_eq!(count(&summary, "up_to_date"), 0, "nothing it took was done before");

    // status of the embedded store: every photo done, by runs of three scopes.
    let (dir, state) = (uploads.dir.display().to_string(), uploads.state.display().to_string());
    let out = refacen(&["status", "--json", "--uploads", &dir, "--state-dir", &state]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status = out.json_lines().pop().unwrap();
    assert_eq!(
        (count(&status, "total"), count(&status, "done"), count(&status, "to_do")),
        (6, 6, 0),
        "{status}"
    );
    let shards: BTreeSet<&str> =
        status["shards"].as_array().unwrap().iter().map(|s| s["shard"].as_str().unwrap()).collect();
    assert_eq!(shards, BTreeSet::from(["0/2", "1/2", "all"]), "{status}");
    let text = refacen(&["status", "--uploads", &dir, "--state-dir", &state]);
    assert!(text.stdout.contains("6 in all, 6 done, 0 to do"), "{}", text.stdout);
    // Another target (other detector parameters) has nothing done.
    let out = refacen(&[
        "status",
        "--json",
        "--uploads",
        &dir,
        "--state-dir",
        &state,
        "--param",
        "min-face-size=40",
    ]);
    let other = out.json_lines().pop().unwrap();
    assert_eq!((count(&other, "done"), count(&other, "to_do")), (0, 6), "{other}");
    assert_ne!(other["target"], status["target"]);

    // Paths outside Uploads are refused before any work, naming the line.
    let list = uploads.dir.parent().unwrap().join("list.txt");
    for (line, why) in [("../secret.jpg", "`..`"), ("/etc/hostname", "absolute path elsewhere")] {
        std::fs::write(&list, format!("{}\n{line}\n", top[0])).unwrap();
        let out = refacen(&uploads.args(&["--photos", &list.display().to_string()]));
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains("line 2") && out.stderr.contains(why), "{}", out.stderr);
    }
    // An absolute path inside Uploads is its relative path.
    std::fs::write(&list, format!("{}\n", uploads.dir.join(&top[1]).display())).unwrap();
    let (out, summary) = uploads.regenerate(&["--photos", &list.display().to_string()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((count(&summary, "selected"), count(&summary, "up_to_date")), (1, 1));
    // Shards and --every-other do not mix.
    let out = refacen(&uploads.args(&["--shard", "0/2", "--every-other", "2"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--shard and --every-other"), "{}", out.stderr);
    let out = refacen(&uploads.args(&["--shard", "2/2"]));
    assert!(out.code == 2 && out.stderr.contains("0 to 1"), "{}", out.stderr);
}

/// `scripts/bench-shards`: 4 shards at once (no kills) against 1 process over the same
/// photos and servers of their own, on this machine: prints the ratio.
#[test]
#[ignore = "a benchmark: scripts/bench-shards runs it"]
fn four_shards_cost_against_one_process() {
    let samples = sample_photos();
    let photos = photos_env(120);
    let one = (Stores::start(1), ClusterUploads::new(&samples, photos));
    let started = Instant::now();
    let out = refacen(&one.1.args(&one.0, &[]));
    let single_s = started.elapsed().as_secs_f64();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let four = (Stores::start(1), ClusterUploads::new(&samples, photos));
    let started = Instant::now();
    let results = clean_run(&four.1, &four.0);
    let sharded_s = started.elapsed().as_secs_f64();
    assert_eq!(results.iter().map(|(_, s)| count(s, "done")).sum::<u64>(), photos as u64);
    assert_eq!(content(&four.0.faces()), content(&one.0.faces()));
    println!(
        "bench-shards: {photos} photos of 0.25 MP, smongo + Tarantool, {} cores: 1 process {single_s:.1} s, \
         4 shards at once {sharded_s:.1} s: {:.2}x the time of 1 process",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sharded_s / single_s
    );
}
