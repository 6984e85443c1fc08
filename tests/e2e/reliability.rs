//! Reliability: hostile images, SIGKILLs at random moments, Ctrl-C, and a MongoDB restart
//! during a run. Figures the README's "Reliability" section quotes are printed with a
//! `reliability:` prefix (`cargo test --release --test e2e reliability -- --nocapture`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::regenerate::{Uploads, count};
use crate::servers::{MongoServer, TarantoolServer};
use crate::soak::read_in_background;
use crate::support::{as_unprivileged, photos, refacen, refacen_command};

/// What a finished child printed, its exit code and its peak resident memory (KiB).
struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
    peak_rss_kib: u64,
}

/// Waits for `child` with wait4(2), which reports that very process's peak memory (tests
/// run in parallel, so the children's total is no measure).
fn wait_with_peak_rss(mut child: Child) -> Finished {
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let (mut status, mut usage): (libc::c_int, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    // SAFETY: waits for our own child, writing into valid locals; `child` is not waited for
    // again (dropping a Child does not wait).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Finished {
        code,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        peak_rss_kib: usage.ru_maxrss as u64,
    }
}

/// A PNG of `width` x `height` 1-bit grey pixels with `idat` as its image data.
fn png(width: u32, height: u32, idat: &[u8]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([1, 0, 0, 0, 0]); // 1-bit greyscale, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// A decompression bomb: a PNG of `width` x `height` pixels, every row present, a few KiB
/// that inflate to width * height / 8 bytes (and decode to width * height * 3).
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; 1 + (width as usize).div_ceil(8)];
    for _ in 0..height {
        encoder.write_all(&row).unwrap();
    }
    png(width, height, &encoder.finish().unwrap())
}

/// A real JPEG whose frame header is rewritten to claim `width` x `height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([100, 100, 100]))
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
        .unwrap();
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG has SOF0");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

#[test]
fn hostile_images_are_refused_each_with_its_reason_in_bounded_memory() {
    let uploads = Uploads::new();
    let dir = uploads.dir.join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let jpeg = std::fs::read(photos().join("obama.jpg")).unwrap();
    let sample_png = std::fs::read(photos().join("astronaut.png")).unwrap();
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let files: [(&str, Vec<u8>); 8] = [
        ("bomb.png", png_bomb(20_000, 20_000)),
        ("bomb.jpg", jpeg_claiming(65_000, 65_000)),
        // The header and the first bytes of image data: the rest never came.
        ("giant-header.png", png(60_000, 60_000, &[0x78, 0x9c, 0x63, 0x00, 0x00])),
        ("truncated.jpg", jpeg[..jpeg.len() / 2].to_vec()),
        ("truncated.png", sample_png[..sample_png.len() / 2].to_vec()),
        ("empty.jpg", Vec::new()),
        ("random.jpg", random),
        ("notes.txt", b"not a photo at all\n".to_vec()),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let bomb_bytes = files[0].1.len();
    std::os::unix::fs::symlink("loop-b", dir.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", dir.join("loop-b")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.jpg")).unwrap();
    std::fs::write(dir.join("unreadable.jpg"), &jpeg).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("unreadable.jpg"), std::fs::Permissions::from_mode(0o000)).unwrap();

    let started = Instant::now();
    let run = as_unprivileged(&uploads.dir, &uploads.state, || {
        wait_with_peak_rss(refacen_command(&uploads.args(&[])).spawn().unwrap())
    });
    let elapsed = started.elapsed();
    let (code, peak_kib, stderr, stdout) = (run.code, run.peak_rss_kib, run.stderr, run.stdout);
    assert_eq!(code, 1, "bad files fail the run: {stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(count(&summary, "done"), 6, "the sample photos are all committed: {stderr}");
    let expected: [(&str, &str); 12] = [
        ("hostile/bomb.png", "too large"),
        ("hostile/bomb.jpg", "too large"),
        ("hostile/giant-header.png", "too large"),
        ("hostile/truncated.jpg", "corrupt image"),
        ("hostile/truncated.png", "corrupt image"),
        ("hostile/empty.jpg", "corrupt image"),
        // Named as a photo but no image inside: damaged, not junk.
        ("hostile/random.jpg", "corrupt image"),
        ("hostile/loop-a", "symlink loop"),
        ("hostile/loop-b", "symlink loop"),
        ("hostile/etc", "symlink out of Uploads"),
        ("hostile/passwd.jpg", "symlink out of Uploads"),
        ("hostile/unreadable.jpg", "unreadable file"),
    ];
    let mut by_cause: BTreeMap<&str, u64> = BTreeMap::new();
    for (file, cause) in expected {
        assert!(stderr.lines().any(|l| l.contains(file)), "{file} is not reported: {stderr}");
        *by_cause.entry(cause).or_default() += 1;
    }
    for (cause, n) in &by_cause {
        assert_eq!(summary["failures"][cause].as_u64(), Some(*n), "{cause}: {}", summary["failures"]);
    }
    assert_eq!(count(&summary, "failed"), expected.len() as u64);
    assert_eq!(count(&summary, "skipped"), 1, "notes.txt is no photo: skipped");
    // The bombs would need gigabytes; refused from their headers, the run stays small.
    assert!(peak_kib < 1_500_000, "peak RSS {peak_kib} KiB");
    println!(
        "reliability: {} hostile image kinds refused ({} causes), a {bomb_bytes}-byte PNG of 400 Mpx among them; \
         peak RSS {:.0} MiB; run {:.1} s",
        expected.len(),
        by_cause.len(),
        peak_kib as f64 / 1024.0,
        elapsed.as_secs_f64()
    );
}

/// A small deterministic generator for kill times (printed seed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        Rng(std::env::var("REFACEN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(seed) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What must be equal between two runs' records: everything but the timestamps.
fn comparable(faces: &BTreeMap<u64, Value>) -> BTreeMap<u64, Value> {
    faces
        .iter()
        .map(|(id, f)| {
            let mut f = f.clone();
            f.as_object_mut().unwrap().remove("detected_at");
            if let Some(facen) = f.get_mut("facen").and_then(Value::as_object_mut) {
                facen.remove("at");
            }
            (*id, f)
        })
        .collect()
}

/// The derived files by name, with their contents' digests (not what killed runs left in
/// `.incoming/`).
fn derived_files(dir: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".incoming")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let name = e.path().strip_prefix(dir).unwrap().display().to_string();
            (name, hex::encode(sha2::Sha256::digest(std::fs::read(e.path()).unwrap())))
        })
        .collect()
}

/// Starts `args` again and again, SIGKILLing each run at a random moment between `after`
/// and `after + spread`, until `kills` runs have been killed while still running; returns the
/// number of runs started. A run that ends before its moment brings the window a quarter
/// earlier: the window comes from runs timed while the other tests loaded the machine, and
/// once they are done a run can take less than its start-up took then (the e2e tests at 16
/// threads on a 2-core VM, 2026-12-05: 200 runs started, fewer than 20 killed).
fn kill_repeatedly(args: &[String], kills: usize, after: Duration, spread: Duration, rng: &mut Rng) -> usize {
    let (mut killed, mut started, mut after, mut spread) = (0, 0, after, spread);
    while killed < kills {
        assert!(started < 10 * kills, "the runs keep finishing before they can be killed");
        started += 1;
        let mut child = refacen_command(args).spawn().unwrap();
        std::thread::sleep(after + Duration::from_millis(rng.below(spread.as_millis() as u64 + 1)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        } else {
            (after, spread) = (after * 3 / 4, spread * 3 / 4);
        }
        let _ = child.wait();
    }
    started
}

/// Kill moments for a job that takes `full` from scratch and `noop` when there is nothing
/// left to do: from most of the start-up on, spread so that 20 kills leave part of the job.
fn kill_window(full: Duration, noop: Duration) -> (Duration, Duration) {
    (noop * 3 / 4, full.saturating_sub(noop) / 15)
}

/// The time `args` takes to run to the end, from scratch.
fn time_run(args: &[String]) -> Duration {
    let started = Instant::now();
    let out = refacen_command(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

#[test]
fn runs_killed_at_random_moments_end_as_one_clean_run() {
    let clean = Uploads::with_copies(4);
    let clean_time = time_run(&clean.args(&[]));
    let (after, spread) = kill_window(clean_time, time_run(&clean.args(&[])));
    let expected = comparable(&clean.faces());

    // Ctrl-C a quarter into the run: the photos in flight are committed, the rest left. Two
    // workers, whatever the machine's threads: with 8 (RAYON_NUM_THREADS=16) the queues hold
    // all 24 photos at once, and a stop would find none left to leave.
    let crashed = Uploads::with_copies(4);
    let child = refacen_command(&crashed.args(&["--concurrency", "2"])).spawn().unwrap();
    std::thread::sleep(clean_time / 4);
    // SAFETY: kill(2) on our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let run = wait_with_peak_rss(child);
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(run.stderr.contains("run the same command again to resume"), "{}", run.stderr);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert!(count(&summary, "done") < 24, "{summary}");

    let mut rng = Rng::from_time();
    println!("reliability: seed {} (REFACEN_TEST_SEED replays it)", rng.0);
    let started = kill_repeatedly(&crashed.args(&[]), 20, after, spread, &mut rng);

    let (out, summary) = crashed.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(count(&summary, "done") + count(&summary, "up_to_date") == 24, "{summary}");
    assert_eq!(comparable(&crashed.faces()), expected, "same ids, boxes, facens and files as a clean run");
    assert_eq!(derived_files(&crashed.files()), derived_files(&clean.files()));
    println!(
        "reliability: embedded store: 20 SIGKILLs over {started} runs (and a Ctrl-C), then a rerun: equal to a clean run"
    );
}

/// Regression: a Ctrl-C while `regenerate` loaded its guests (before it listened for signals)
/// killed it with no summary. Scanning the guest directory loads every guest in it, a second
/// or more with the Python and JavaScript ones there.
#[test]
fn a_ctrl_c_while_the_guests_load_stops_the_run_with_its_summary() {
    let uploads = Uploads::of(&["obama.jpg"]);
    let child = refacen_command(&uploads.args(&[])).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let run = wait_with_peak_rss(child);
    assert_eq!(run.code, 130, "{}", run.stderr);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no summary ({e}): {}", run.stderr));
    assert_eq!(summary["interrupted"], true, "{summary}");
}

#[test]
fn runs_killed_at_random_moments_end_as_one_clean_run_with_mongodb_and_tarantool() {
    let mongo = MongoServer::start();
    let (clean_shard, crashed_shard) = (TarantoolServer::start(), TarantoolServer::start());
    let stores = |db: &str, shard: &TarantoolServer| {
        vec![
            "--mongo".to_string(),
            mongo.uri(),
            "--mongo-db".into(),
            db.into(),
            "--tarantool".into(),
            shard.address(),
        ]
    };
    let with = |uploads: &Uploads, stores: &[String]| {
        let mut args = uploads.args(&[]);
        args.extend(stores.iter().cloned());
        args
    };
    let faces = |db: &str| -> BTreeMap<u64, Value> {
        let out = refacen(&["faces", "--json", "--mongo", &mongo.uri(), "--mongo-db", db]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines().into_iter().map(|f| (f["id"].as_u64().unwrap(), f)).collect()
    };
    let space_count = |shard: &TarantoolServer| {
        let out = refacen(&["spaces", "--json", "--tarantool", &shard.address()]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json_lines()[0]["count"].as_u64().unwrap()
    };

    let clean = Uploads::with_copies(3);
    let clean_args = with(&clean, &stores("clean", &clean_shard));
    let clean_time = time_run(&clean_args);
    let (after, spread) = kill_window(clean_time, time_run(&clean_args));
    let expected = comparable(&faces("clean"));

    let crashed = Uploads::with_copies(3);
    let crashed_args = with(&crashed, &stores("crashed", &crashed_shard));
    let mut rng = Rng::from_time();
    println!("reliability: seed {} (REFACEN_TEST_SEED replays it)", rng.0);
    let started = kill_repeatedly(&crashed_args, 20, after, spread, &mut rng);
    let out = refacen(&crashed_args);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let got = faces("crashed");
    assert_eq!(comparable(&got), expected, "same ids, boxes and facens as a clean run");
    assert!(got.values().all(|f| f["search_pending"] == false), "every copy is in Tarantool");
    assert_eq!(
        space_count(&crashed_shard),
        space_count(&clean_shard),
        "no facen lost or duplicated in Tarantool"
    );
    assert_eq!(derived_files(&crashed.files()), derived_files(&clean.files()));
    println!(
        "reliability: MongoDB + Tarantool: 20 SIGKILLs over {started} runs, then a rerun: equal to a clean run"
    );
}

#[test]
fn a_mongodb_restart_during_a_run_loses_nothing() {
    let reference = Uploads::with_copies(3);
    assert_eq!(reference.regenerate(&[]).0.code, 0);
    let expected = crate::regenerate::content(&reference.faces());

    let mut mongo = MongoServer::start();
    let uploads = Uploads::with_copies(3);
    let mut args = uploads.args(&["--concurrency", "1"]);
    args.extend(["--mongo".into(), mongo.uri(), "--mongo-db".into(), "restart".into()]);
    let child = refacen_command(&args).spawn().unwrap();
    // Down for a second once the run has committed something (its normalized faces appear).
    let started = Instant::now();
    while !uploads.files().join("normalized").is_dir() {
        assert!(started.elapsed() < Duration::from_secs(120), "nothing was committed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    mongo.kill();
    std::thread::sleep(Duration::from_secs(1));
    mongo.start_again();
    let run = wait_with_peak_rss(child);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let out = refacen(&["faces", "--json", "--mongo", &mongo.uri(), "--mongo-db", "restart"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let faces: BTreeMap<u64, Value> =
        out.json_lines().into_iter().map(|f| (f["id"].as_u64().unwrap(), f)).collect();
    assert_eq!(crate::regenerate::content(&faces), expected, "every face, once");
    println!("reliability: a MongoDB restart during a run: the run completed, nothing lost or duplicated");
}
