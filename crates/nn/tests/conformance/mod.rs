//! The op conformance suite, written once for every backend.
//!
//! Each case under `tests/fixtures/ops/<case>/` is a small ONNX model with inputs and the
//! outputs onnxruntime computed for them (`gen_cases.py` in this directory generates them;
//! the reference values never come from refacen). [`check_all`] runs every case on a backend
//! and compares elementwise with `|got - want| <= 1e-4 * max(1, |want|)`, reporting every
//! failing case at once. [`check_load_refusals`] and [`check_run_refusals`] check that what
//! refacen cannot or must not run is refused with a useful error.
//!
//! A backend's test file includes this module (`mod conformance;`) and calls the checks with
//! its backend. Set `REFACEN_CONFORMANCE_FILTER=<substring>` to run only matching cases.

// Each backend's test binary may use only part of the suite.
#![allow(dead_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use refacen_nn as nn;
use refacen_nn::{Backend, NnError, Tensor};

/// Relative tolerance: |got - want| <= RTOL * max(1, |want|).
pub const RTOL: f32 = 1e-4;

/// Environment variable restricting [`check_all`] to cases whose name contains its value.
pub const FILTER_ENV: &str = "REFACEN_CONFORMANCE_FILTER";

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// The case directories under `fixtures/ops`, sorted by name. Panics when the directory is
/// missing or holds no case: a suite that checks nothing must not pass.
pub fn case_dirs() -> Vec<PathBuf> {
    let root = fixtures_dir().join("ops");
    let entries = std::fs::read_dir(&root).unwrap_or_else(|e| {
        panic!(
            "conformance fixtures missing: cannot read {}: {e}; regenerate them with \
             `python3 crates/nn/tests/conformance/gen_cases.py`",
            root.display()
        )
    });
    let mut dirs: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable fixtures directory").path())
        .filter(|path| path.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no conformance cases (directories with a model.onnx) under {}",
        root.display()
    );
    dirs
}

fn case_name(dir: &Path) -> String {
    dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Runs every case on `backend` and panics listing all failing cases.
pub fn check_all(backend: &dyn Backend) {
    let filter = std::env::var(FILTER_ENV).ok().filter(|f| !f.is_empty());
    let dirs: Vec<PathBuf> = case_dirs()
        .into_iter()
        .filter(|d| filter.as_ref().is_none_or(|f| case_name(d).contains(f.as_str())))
        .collect();
    assert!(!dirs.is_empty(), "no conformance case matches {FILTER_ENV}={filter:?}");

    let mut failures = Vec::new();
    for dir in &dirs {
        // A panicking kernel fails its case, not the whole run.
        let result = catch_unwind(AssertUnwindSafe(|| run_case(backend, dir)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))));
        if let Err(message) = result {
            failures.push(format!("{}: {message}", case_name(dir)));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} conformance cases failed on backend `{}`:\n  {}",
            failures.len(),
            dirs.len(),
            backend.name(),
            failures.join("\n  ")
        );
    }
    eprintln!("{} conformance cases passed on backend `{}`", dirs.len(), backend.name());
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Runs every case from `callers` threads at once, `rounds` times each, on a pool of
/// `pool_threads` rayon threads: as many guest instances calling into the backend on a server
/// with that many cores. Each caller starts at another case, so different graphs interleave.
/// Panics listing every case that failed or panicked in any round.
pub fn check_all_concurrently(backend: &dyn Backend, pool_threads: usize, callers: usize, rounds: usize) {
    struct Case {
        name: String,
        executable: Arc<dyn nn::Executable>,
        inputs: Vec<Tensor>,
        wanted: Vec<Tensor>,
    }
    let cases: Vec<Case> = case_dirs()
        .iter()
        .filter_map(|dir| {
            let bytes = std::fs::read(dir.join("model.onnx")).expect("model.onnx is readable");
            let graph = nn::load_onnx(&bytes).expect("every case loads");
            let executable = match backend.prepare(Arc::new(graph)) {
                Ok(x) => x,
                // Refused by this backend (see run_case).
                Err(NnError::UnsupportedOp { .. }) => return None,
                Err(e) => panic!("{}: prepare failed: {e}", case_name(dir)),
            };
            Some(Case {
                name: case_name(dir),
                executable,
                inputs: numbered_arrays(dir, "input").expect("inputs"),
                wanted: numbered_arrays(dir, "output").expect("outputs"),
            })
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(pool_threads).build().expect("a thread pool");
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for caller in 0..callers {
            let (cases, pool, failures) = (&cases, &pool, &failures);
            scope.spawn(move || {
                for round in 0..rounds {
                    for i in 0..cases.len() {
                        let case = &cases[(i + caller * cases.len() / callers) % cases.len()];
                        let result = catch_unwind(AssertUnwindSafe(|| {
                            let got = pool
                                .install(|| case.executable.run(case.inputs.clone()))
                                .map_err(|e| format!("run failed: {e}"))?;
                            got.iter().zip(&case.wanted).try_for_each(|(got, want)| compare(got, want))
                        }))
                        .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))));
                        if let Err(message) = result {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{} (caller {caller}, round {round}): {message}", case.name));
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} case runs failed on backend `{}` with {pool_threads} threads and {callers} callers:\n  {}",
        failures.len(),
        backend.name(),
        failures.join("\n  ")
    );
}

/// `dir/<prefix>_0.npy`, `dir/<prefix>_1.npy`, … up to the first missing index.
fn numbered_arrays(dir: &Path, prefix: &str) -> Result<Vec<Tensor>, String> {
    let mut tensors = Vec::new();
    loop {
        let path = dir.join(format!("{prefix}_{}.npy", tensors.len()));
        if !path.exists() {
            return Ok(tensors);
        }
        tensors.push(read_npy(&path)?);
    }
}

/// Loads, prepares and runs one case; `Err` describes the first problem found in it.
pub fn run_case(backend: &dyn Backend, dir: &Path) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| format!("reading model.onnx: {e}"))?;
    let graph = nn::load_onnx(&bytes).map_err(|e| format!("load_onnx failed: {e}"))?;
    let output_names: Vec<String> = graph.output_names().map(str::to_string).collect();
    let inputs = numbered_arrays(dir, "input")?;
    let wanted = numbered_arrays(dir, "output")?;
    if inputs.len() != graph.inputs.len() {
        return Err(format!("the graph has {} inputs, the case {}", graph.inputs.len(), inputs.len()));
    }
    if wanted.is_empty() || wanted.len() != output_names.len() {
        return Err(format!(
            "the graph has {} outputs, the case {} reference outputs",
            output_names.len(),
            wanted.len()
        ));
    }
    let executable = match backend.prepare(Arc::new(graph)) {
        Ok(x) => x,
        // A backend may refuse an op it has no kernel for, naming it, when the graph is prepared
        // (the GPU backend's Resize, for one); it may not answer wrongly.
        Err(e @ NnError::UnsupportedOp { .. }) => {
            eprintln!("{}: refused by backend `{}`: {e}", case_name(dir), backend.name());
            return Ok(());
        }
        Err(e) => return Err(format!("prepare failed: {e}")),
    };
    // A run on NaN inputs first: buffers a backend hands one run after an earlier one (the CPU
    // backend's spare buffers) then hold NaN, which fails the comparison wherever an op leaves
    // a value of its output unwritten. Its result does not matter.
    let poison =
        inputs.iter().map(|t| Tensor::new(t.shape().to_vec(), vec![f32::NAN; t.len()]).unwrap()).collect();
    let _ = executable.run(poison);
    let got = executable.run(inputs).map_err(|e| format!("run failed: {e}"))?;
    if got.len() != wanted.len() {
        return Err(format!("run returned {} outputs, expected {}", got.len(), wanted.len()));
    }
    let mut problems = Vec::new();
    for (i, ((got, want), name)) in got.iter().zip(&wanted).zip(&output_names).enumerate() {
        if let Err(e) = compare(got, want) {
            problems.push(format!("output {i} `{name}`: {e}"));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// Checks `got` against `want`: same shape, and every element within
/// `RTOL * max(1, |want|)`. The error names the worst element.
pub fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    // (index, excess ratio |diff| / tolerance); NaN counts as infinitely wrong.
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
        if within_tolerance(g, w) {
            continue;
        }
        let tolerance = RTOL * w.abs().max(1.0);
        let ratio = (g - w).abs() / tolerance;
        let ratio = if ratio.is_nan() { f32::INFINITY } else { ratio };
        if worst.is_none_or(|(_, r)| ratio > r) {
            worst = Some((i, ratio));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => {
            let bad = got.data().iter().zip(want.data()).filter(|&(&g, &w)| !within_tolerance(g, w)).count();
            let (g, w) = (got.data()[i], want.data()[i]);
            Err(format!(
                "{bad} of {} elements out of tolerance; worst at {:?}: got {g}, want {w} \
                 (|diff| {}, tolerance {})",
                want.len(),
                unravel(i, want.shape()),
                (g - w).abs(),
                RTOL * w.abs().max(1.0)
            ))
        }
    }
}

/// Whether `got` is within `RTOL * max(1, |want|)` of `want` (equal infinities match; NaN
/// never does).
fn within_tolerance(got: f32, want: f32) -> bool {
    got == want || (got - want).abs() <= RTOL * want.abs().max(1.0)
}

/// The multi-dimensional index of flat index `i` in a C-order tensor of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        index[d] = i % n.max(1);
        i /= n.max(1);
    }
    index
}

// ---------------------------------------------------------------------------------------------
// .npy reading

pub fn read_npy(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_npy(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a .npy file holding a little-endian float32 array in C order (format versions
/// 1.0, 2.0 and 3.0).
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let len = bytes.get(8..12).ok_or("truncated header length")?;
            (u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let header = bytes.get(header_start..header_start + header_len).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not UTF-8")?;

    let descr = header_value(header, "descr")?.trim_start();
    let descr = descr
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| format!("malformed descr in {header}"))?;
    if descr != "<f4" {
        return Err(format!("element type {descr}; only little-endian float32 (<f4) is supported"));
    }
    let fortran = header_value(header, "fortran_order")?;
    if !fortran.trim().starts_with("False") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape = header_value(header, "shape")?;
    let shape = shape.trim();
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("malformed shape {shape}"))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad dimension `{s}`")))
        .collect::<Result<_, _>>()?;

    let data = &bytes[header_start + header_len..];
    let count: usize = shape.iter().product();
    if data.len() != count * 4 {
        return Err(format!("shape {shape:?} needs {} data bytes, the file has {}", count * 4, data.len()));
    }
    let values = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Tensor::new(shape, values).map_err(|e| e.to_string())
}

/// The text after `'key':` in a .npy header dict, up to the end of the header.
fn header_value<'h>(header: &'h str, key: &str) -> Result<&'h str, String> {
    let pattern = format!("'{key}':");
    let at = header.find(&pattern).ok_or_else(|| format!("header has no `{key}`: {header}"))?;
    Ok(&header[at + pattern.len()..])
}

// ---------------------------------------------------------------------------------------------
// Coverage

/// Whether a serialized model has a node whose op_type is `op`: NodeProto.op_type is field 4,
/// length-delimited (tag byte 0x22), so the bytes 0x22, len, op appear in the model. A
/// byte-level check keeps the suite free of a protobuf dependency; a false positive would need
/// that exact sequence inside tensor data.
fn mentions_op(model: &[u8], op: &str) -> bool {
    let mut needle = vec![0x22, op.len() as u8];
    needle.extend_from_slice(op.as_bytes());
    model.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// Every op refacen's importer accepts occurs in at least one case.
pub fn check_coverage() {
    let models: Vec<Vec<u8>> = case_dirs()
        .iter()
        .map(|d| std::fs::read(d.join("model.onnx")).expect("readable model.onnx"))
        .collect();
    let missing: Vec<&str> = nn::onnx::SUPPORTED_OPS
        .iter()
        .copied()
        .filter(|op| !models.iter().any(|m| mentions_op(m, op)))
        .collect();
    assert!(missing.is_empty(), "supported ops without a conformance case: {missing:?}");
}

// ---------------------------------------------------------------------------------------------
// Refusals

fn refusal_model(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join("refusals").join(name).join("model.onnx");
    std::fs::read(&path).unwrap_or_else(|e| panic!("refusal fixture {}: {e}", path.display()))
}

fn load_error(name: &str, bytes: &[u8]) -> NnError {
    match nn::load_onnx(bytes) {
        Ok(_) => panic!("{name}: load_onnx accepted a model it must refuse"),
        Err(e) => e,
    }
}

/// Models the importer must refuse, whatever the backend.
pub fn check_load_refusals() {
    for (case, op, node) in [
        ("unsupported_resize_mode", "Resize", "upsample_by_2"),
        ("unsupported_lstm", "LSTM", "encoder_lstm"),
        ("dropout_training_mode_true", "Dropout", "train_dropout"),
    ] {
        let err = load_error(case, &refusal_model(case));
        let text = err.to_string();
        assert!(
            matches!(&err, NnError::UnsupportedOp { op: o, node: n, .. } if o == op && n == node),
            "{case}: expected UnsupportedOp {{ op: {op}, node: {node} }}, got {err:?}"
        );
        assert!(
            text.contains(op) && text.contains(node),
            "{case}: message must name {op} and {node}: {text}"
        );
    }

    for (case, node) in [
        ("conv_weights_as_input", "dynamic_conv"),
        ("conv_weights_as_input_no_kernel_shape", "dynamic_conv_2"),
    ] {
        let err = load_error(case, &refusal_model(case));
        let text = err.to_string();
        assert!(
            text.contains(node) && text.contains("Conv"),
            "{case}: the error must name the Conv node `{node}`: {text}"
        );
    }

    let valid = refusal_model("static_shape_relu");
    let garbage: [(&str, &[u8]); 4] = [
        ("0xff bytes", &[0xff; 32]),
        ("text", b"this is not an ONNX model, just text\n"),
        ("empty", b""),
        ("truncated model", &valid[..valid.len() / 2]),
    ];
    for (what, bytes) in garbage {
        let err = load_error(what, bytes);
        assert!(matches!(err, NnError::InvalidEncoding(_)), "{what}: expected InvalidEncoding, got {err:?}");
    }
}

/// Runs that `backend` must refuse: inputs of the wrong shape, rank or count.
pub fn check_run_refusals(backend: &dyn Backend) {
    let graph = nn::load_onnx(&refusal_model("static_shape_relu")).expect("a valid model");
    let executable = backend.prepare(Arc::new(graph)).expect("prepare");
    let tensor = |shape: &[usize]| Tensor::new(shape.to_vec(), vec![0.5; shape.iter().product()]).unwrap();

    for shape in [&[1, 3, 5, 5][..], &[2, 3, 4, 4], &[3, 4, 4], &[1, 3, 4, 4, 1]] {
        match executable.run(vec![tensor(shape)]) {
            Ok(_) => panic!("a run with input shape {shape:?} (declared [1, 3, 4, 4]) succeeded"),
            Err(NnError::InputShape { input, expected, got }) => {
                assert_eq!(input, "pixels", "the error for shape {shape:?} must name input `pixels`");
                assert_eq!(expected, [Some(1), Some(3), Some(4), Some(4)]);
                assert_eq!(got, shape);
            }
            Err(e) => panic!("a run with input shape {shape:?}: expected InputShape, got {e:?}"),
        }
    }
    let text = executable.run(vec![tensor(&[2, 3, 4, 4])]).unwrap_err().to_string();
    assert_eq!(text, "invalid argument: input `pixels` must have shape [1, 3, 4, 4], got [2, 3, 4, 4]");
    for count in [0, 2] {
        match executable.run(vec![tensor(&[1, 3, 4, 4]); count]) {
            Err(NnError::InputCount { expected: 1, got, .. }) => assert_eq!(got, count),
            other => panic!("a run with {count} inputs for one: expected InputCount, got {other:?}"),
        }
    }
    // Refusals leave the executable usable.
    let out = executable.run(vec![tensor(&[1, 3, 4, 4])]).expect("a run with the declared shape");
    assert_eq!(out[0].shape(), [1, 3, 4, 4]);
}

// ---------------------------------------------------------------------------------------------
// Self-checks of the comparison and the .npy reader

pub fn self_test() {
    let t = |shape: &[usize], data: &[f32]| Tensor::new(shape.to_vec(), data.to_vec()).unwrap();
    let want = t(&[2, 2], &[1.0, -200.0, 0.0, f32::INFINITY]);
    assert!(compare(&want, &want).is_ok());
    assert!(compare(&t(&[2, 2], &[1.00009, -200.019, 0.00009, f32::INFINITY]), &want).is_ok());
    let err = compare(&t(&[2, 2], &[1.0, -200.03, 0.0, f32::INFINITY]), &want).unwrap_err();
    assert!(err.contains("[0, 1]"), "worst element index missing: {err}");
    assert!(compare(&t(&[2, 2], &[f32::NAN, -200.0, 0.0, f32::INFINITY]), &want).is_err());
    assert!(compare(&t(&[4], &[1.0, -200.0, 0.0, f32::INFINITY]), &want).is_err());

    // np.save(np.arange(6, dtype=np.float32).reshape(2, 3)), and a 0-d array.
    let npy = |shape: &str, values: &[f32]| {
        let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        bytes
    };
    let m = parse_npy(&npy("(2, 3)", &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])).unwrap();
    assert_eq!((m.shape(), m.data()), (&[2, 3][..], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0][..]));
    let v = parse_npy(&npy("(4,)", &[1.0, 2.0, 3.0, 4.0])).unwrap();
    assert_eq!(v.shape(), [4]);
    let s = parse_npy(&npy("()", &[7.5])).unwrap();
    assert_eq!((s.shape(), s.data()), (&[][..], &[7.5][..]));
    assert!(parse_npy(&npy("(2, 3)", &[0.0; 5])).is_err(), "short data accepted");
    assert!(parse_npy(b"not npy at all").is_err());
}

// ---------------------------------------------------------------------------------------------
// Backend against backend

/// The largest differences between two runs' outputs: (absolute, relative to max(1, |want|)).
#[derive(Clone, Copy, Debug, Default)]
pub struct Difference {
    pub max_abs: f32,
    pub max_rel: f32,
}

/// Runs `graph` on `inputs` with `reference` and with `tested`, checks every output of
/// `tested` against `reference` with [`compare`] (the suite's tolerance) and returns the
/// largest differences seen. `Err` names the first output out of tolerance.
pub fn compare_backends(
    reference: &dyn Backend,
    tested: &dyn Backend,
    graph: nn::Graph,
    inputs: Vec<Tensor>,
) -> Result<Difference, String> {
    let names: Vec<String> = graph.output_names().map(str::to_string).collect();
    let graph = Arc::new(graph);
    let want = reference
        .prepare(graph.clone())
        .and_then(|e| e.run(inputs.clone()))
        .map_err(|e| format!("{}: {e}", reference.name()))?;
    let got =
        tested.prepare(graph).and_then(|e| e.run(inputs)).map_err(|e| format!("{}: {e}", tested.name()))?;
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    let mut difference = Difference::default();
    for ((got, want), name) in got.iter().zip(&want).zip(&names) {
        compare(got, want).map_err(|e| format!("output `{name}`: {e}"))?;
        for (&g, &w) in got.data().iter().zip(want.data()) {
            let abs = (g - w).abs();
            if abs.is_finite() {
                difference.max_abs = difference.max_abs.max(abs);
                difference.max_rel = difference.max_rel.max(abs / w.abs().max(1.0));
            }
        }
    }
    Ok(difference)
}
