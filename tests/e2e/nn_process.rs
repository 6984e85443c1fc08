//! What all guest instances of a process hold in the host through wasi-nn together: capped
//! for the process, a graph shared through the cache charged once, the cache of prepared
//! graphs bounded, and everything given back when the instances are gone. Real guests on the
//! real host, several instances at once (more threads than the machine's cores).

use std::sync::Arc;

use refacen::face::parse_params;
use refacen::nn::Backend;
use refacen::nn::cpu::CpuBackend;
use refacen::runtime::{
    CodeCache, GuestFailure, GuestLimits, GuestRuntime, NnHost, NnLimits, ProcessNnLimits, ProcessNnUsage,
};

use crate::support::{guest, photos, repo, test_guest};

const INSTANCES: usize = 4;
const PROCESS_BYTES: u64 = 64 << 20;
const PROCESS_HANDLES: u64 = 3000;
const PREPARED_BYTES: usize = 512;

fn host() -> (Arc<NnHost>, GuestRuntime) {
    let backend: Arc<dyn Backend> = Arc::new(CpuBackend::default());
    let limits = NnLimits {
        process: ProcessNnLimits { max_bytes: PROCESS_BYTES, max_handles: PROCESS_HANDLES },
        max_prepared_graph_bytes: PREPARED_BYTES,
        ..NnLimits::default()
    };
    let nn = Arc::new(NnHost::new(backend, limits));
    let cache = CodeCache::new(Some(repo().join("target/test-cache")));
    let runtime = GuestRuntime::new(nn.clone(), GuestLimits::default(), cache).unwrap();
    (nn, runtime)
}

/// Each of `INSTANCES` hostile instances at once runs `mode` on a trigger image, then a good
/// one; returns the failures of the first calls.
fn hostile_at_once(runtime: &GuestRuntime, mode: &str) -> Vec<GuestFailure> {
    let hostile = runtime.load(&test_guest("hostile")).unwrap();
    let mut red = image::RgbImage::from_pixel(64, 64, image::Rgb([90, 120, 150]));
    red.put_pixel(0, 0, image::Rgb([255, 0, 0]));
    let good = image::RgbImage::from_pixel(64, 64, image::Rgb([90, 120, 150]));
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..INSTANCES)
            .map(|_| {
                let (hostile, red, good) = (hostile.clone(), &red, &good);
                scope.spawn(move || {
                    let mut detector = runtime.detector(hostile).unwrap();
                    let params =
                        parse_params(&detector.info().params.clone(), &[format!("mode={mode}")], "hostile")
                            .unwrap();
                    let failure = detector.detect(red, &params).expect_err(mode).failure;
                    assert_eq!(
                        detector.detect(good, &params).unwrap().len(),
                        1,
                        "{mode}: the next photo is served"
                    );
                    failure
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

#[test]
fn instances_together_are_held_to_the_process_ceiling_and_give_everything_back() {
    let (nn, runtime) = host();

    // Tensors kept by four instances at once: the process's 64 MiB runs out long before any
    // instance's own 2 GiB, and each fails with the process's figure.
    for failure in hostile_at_once(&runtime, "big-tensors") {
        let GuestFailure::NnProcess(exceeded) = &failure else { panic!("big-tensors: {failure}") };
        let text = exceeded.to_string();
        assert!(text.contains("a tensor of 4 MiB") && text.contains("limit of 64 MiB"), "{text}");
    }
    assert_eq!(nn.process_usage(), ProcessNnUsage::default(), "the failed instances gave everything back");

    // Handles likewise: 3000 for the process, before an instance's own 4096.
    for failure in hostile_at_once(&runtime, "many-tensors") {
        assert!(
            matches!(&failure, GuestFailure::NnProcess(e) if e.to_string().contains("limit of 3000")),
            "many-tensors: {failure}"
        );
    }
    assert_eq!(nn.process_usage(), ProcessNnUsage::default());

    // Distinct graphs: each instance stops at its own 16; the prepared-graph cache keeps at
    // most its 512 bytes however many were loaded.
    for failure in hostile_at_once(&runtime, "many-graphs") {
        assert!(failure.to_string().contains("holds 16 graphs"), "many-graphs: {failure}");
    }
    let (kept, bytes) = nn.prepared_graphs();
    assert!(bytes <= PREPARED_BYTES || kept == 1, "the cache keeps {kept} graphs of {bytes} bytes");
    assert!(kept < 16, "the oldest graphs were let go: {kept} kept");
    assert_eq!(nn.process_usage(), ProcessNnUsage::default());

    // A real detector in two instances: they share its graphs, which the process charges
    // once, though the cache (512 bytes) let go of all but the newest. Both find the same
    // faces, and once both are gone the process holds nothing.
    let astronaut =
        refacen::imaging::decode_rgb(&photos().join("astronaut.png"), &Default::default()).unwrap();
    let nnd = runtime.load(&guest("nnd")).unwrap();
    let mut first = runtime.detector(nnd.clone()).unwrap();
    let mut second = runtime.detector(nnd).unwrap();
    let found = first.detect(&astronaut, &[]).unwrap();
    assert_eq!(second.detect(&astronaut, &[]).unwrap(), found);
    assert!(!found.is_empty());
    let one = first.nn_usage().unwrap();
    assert_eq!(second.nn_usage().unwrap(), one);
    assert!(one.graphs >= 1 && one.graph_bytes > PREPARED_BYTES, "{one:?}");
    let together = nn.process_usage();
    assert_eq!(together.graphs, one.graphs, "each graph charged once: {together:?}");
    assert_eq!(
        together.bytes, one.graph_bytes as u64,
        "graph bytes charged once, no tensors left: {together:?}"
    );
    assert_eq!(together.handles, 2 * one.contexts as u64, "{together:?} for {one:?}");
    drop(first);
    assert_eq!(
        nn.process_usage().bytes,
        one.graph_bytes as u64,
        "the graphs stay charged while one holds them"
    );
    drop(second);
    assert_eq!(nn.process_usage(), ProcessNnUsage::default(), "nothing left once both instances are gone");
}
