//! `hostile`: a test detector that misbehaves on purpose, to check that the host contains it.
//!
//! On a "trigger" image, one whose top-left pixel is pure red (255, 0, 0), it does what the
//! `mode` parameter says: spin, allocate without bound, trap, panic, try to escape the sandbox
//! (files, environment, network, wall clock), return absurd faces or feed wasi-nn garbage. On
//! every other image it behaves: one face covering the central half of the image, score 0.5.
//!
//! The sandbox probes (`open-file`, `read-env`, `socket`, `clock`) fail with an `internal`
//! error naming what the guest saw when the sandbox holds. When it does not, they return a
//! face whose score is a "leak marker" (1000 + bytes read, 2000 + variables seen, 3000 for a
//! connection, 4000 for a real clock) so that a test can tell a leak from a refusal.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use kit::bindings::wasi::nn;
use kit::detector::{DetectorInfo, Face, Guest, GuestError, Image, Param, ParamSpec};
use kit::params::{self, Params};
use kit::types::{Bbox, Landmarks, Point};

struct Hostile;

kit::export_detector!(Hostile);

/// Every mode, with what it does on the trigger image.
const MODES: &[(&str, &str)] = &[
    ("none", "behave well"),
    ("loop", "spin forever"),
    ("alloc", "allocate memory without bound"),
    ("trap", "execute `unreachable`"),
    ("panic", "panic with a message"),
    ("open-file", "read /etc/passwd and list /"),
    ("read-env", "read environment variables and arguments"),
    ("socket", "connect over TCP to 127.0.0.1:`port` and bind a UDP socket"),
    ("clock", "read the wall clock"),
    ("many-faces", "return 20000 faces"),
    ("huge-answer", "return 10 million faces"),
    ("nan-face", "return a face with a NaN coordinate"),
    ("outside", "return a face lying outside the image"),
    ("bad-nn", "load 100 bytes of garbage as an ONNX graph"),
    ("heavy-conv", "compute a small graph of 2000 convolutions: ~2.4 TFLOP in one call"),
    ("heavy-matmul", "compute 8 products of 4096x4096 matrices: ~1.1 TFLOP in one call, 137 GFLOP a node"),
    ("many-graphs", "load 1000 distinct graphs and keep every one"),
    ("many-tensors", "create 100000 tensors and keep every one"),
    ("big-tensors", "create 2000 tensors of 4 MiB and keep every one"),
    (
        "overflow",
        "hand wasi-nn sizes crafted to overflow: tensor dimensions whose product overflows, a byte length \
         that wraps to 0, a 2^120-value initializer, a Reshape and a dilated Conv whose shapes overflow",
    ),
    (
        "area",
        "ask the host's area resampling for what it must refuse: an image of the wrong byte length or of \
         4294967295x4294967295 pixels, 5000 levels, an empty level, a 4294967295x4294967295 level, a \
         region leaving the image, 65535x65535 crops",
    ),
    ("area-hoard", "make summed-area tables of the image and keep every one"),
];

/// Memory `alloc` mode holds on to, so that no allocation can be optimized away or freed.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn param_specs() -> Vec<ParamSpec> {
    let modes: Vec<String> = MODES.iter().map(|(name, what)| format!("{name} ({what})")).collect();
    vec![
        params::text(
            "mode",
            "none",
            &format!("How to misbehave on images whose top-left pixel is pure red: {}", modes.join(", ")),
        ),
        params::int("port", 9, "TCP port on 127.0.0.1 that the `socket` mode connects to"),
    ]
}

/// The face returned for a well-behaved call: the central half of a `w` x `h` image.
fn normal_face(w: f32, h: f32) -> Face {
    face_in(Bbox { x1: w / 4.0, y1: h / 4.0, x2: 3.0 * w / 4.0, y2: 3.0 * h / 4.0 }, 0.5)
}

/// A face in `bbox` with landmarks where a frontal face has them.
fn face_in(bbox: Bbox, score: f32) -> Face {
    let at = |fx: f32, fy: f32| Point {
        x: bbox.x1 + fx * (bbox.x2 - bbox.x1),
        y: bbox.y1 + fy * (bbox.y2 - bbox.y1),
    };
    let landmarks = Landmarks {
        left_eye: at(0.3, 0.4),
        right_eye: at(0.7, 0.4),
        nose: at(0.5, 0.6),
        mouth_left: at(0.35, 0.8),
        mouth_right: at(0.65, 0.8),
    };
    Face { bbox, score, landmarks }
}

/// A normal face carrying a leak marker as its score.
fn leak(w: f32, h: f32, score: f32) -> Result<Vec<Face>, GuestError> {
    let mut face = normal_face(w, h);
    face.score = score;
    Ok(vec![face])
}

fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn hoard() -> ! {
    const CHUNK: usize = 16 << 20;
    loop {
        // Non-zero bytes, so every page is written.
        let chunk = vec![0xa5u8; CHUNK];
        let mut hoard = HOARD.lock().unwrap_or_else(|e| e.into_inner());
        hoard.push(std::hint::black_box(chunk));
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::unreachable()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::process::abort()
    }
}

fn open_file(w: f32, h: f32) -> Result<Vec<Face>, GuestError> {
    let read = std::fs::read("/etc/passwd");
    if let Ok(bytes) = &read {
        return leak(w, h, 1000.0 + bytes.len() as f32);
    }
    let list = std::fs::read_dir("/");
    if let Ok(entries) = list {
        return leak(w, h, 1000.0 + entries.count() as f32);
    }
    let (Err(read_err), Err(list_err)) = (read, list) else { unreachable!("successes returned above") };
    Err(GuestError::Internal(format!("open-file: /etc/passwd: {read_err}; /: {list_err}")))
}

fn read_env(w: f32, h: f32) -> Result<Vec<Face>, GuestError> {
    let vars = std::env::vars().count();
    // Arguments may hold a program name on some runtimes; only variables count as a leak.
    let _args = std::hint::black_box(std::env::args().count());
    if vars > 0 {
        return leak(w, h, 2000.0 + vars as f32);
    }
    Err(GuestError::Internal("read-env: no environment".into()))
}

fn socket(w: f32, h: f32, port: u16) -> Result<Vec<Face>, GuestError> {
    let udp = std::net::UdpSocket::bind(("0.0.0.0", 0));
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => leak(w, h, 3000.0),
        Err(err) => {
            let udp = match udp {
                Ok(_) => "bound".to_string(),
                Err(e) => e.to_string(),
            };
            Err(GuestError::Internal(format!("socket: {err} (UDP bind: {udp})")))
        }
    }
}

fn clock(w: f32, h: f32) -> Result<Vec<Face>, GuestError> {
    // 2001-01-01T00:00:00Z.
    let y2001 = SystemTime::UNIX_EPOCH + Duration::from_secs(978_307_200);
    if SystemTime::now() > y2001 {
        return leak(w, h, 4000.0);
    }
    Err(GuestError::Internal("clock: frozen".into()))
}

fn bad_nn() -> Result<Vec<Face>, GuestError> {
    let garbage: Vec<u8> = (0..100u32).map(|i| (i.wrapping_mul(37) ^ 0x5a) as u8).collect();
    match kit::WasiNnNetwork::load(&garbage, "input") {
        Ok(_) => Err(GuestError::Internal("bad-nn: the host accepted a garbage graph".into())),
        Err(e) => Err(GuestError::Nn(e)),
    }
}

/// A graph small in memory but huge in work: `nodes` `op` nodes chained on one input, each
/// reading one shared initializer `w`, run once on an input of `input_dims`.
fn heavy(
    op: &str,
    nodes: usize,
    input_dims: &[usize],
    w: onnx_proto::TensorProto,
    attributes: Vec<onnx_proto::AttributeProto>,
) -> Result<Vec<Face>, GuestError> {
    use onnx_proto::build::{Dim, model, node, value_info_f32};
    use prost::Message;
    let dims: Vec<Dim> = input_dims.iter().map(|&d| Dim::Fixed(d)).collect();
    let name = |i: usize| if i == 0 { "input".to_string() } else { format!("v{i}") };
    let graph = onnx_proto::GraphProto {
        name: format!("heavy-{op}"),
        node: (0..nodes)
            .map(|i| node(op, &format!("{op}{i}"), &[&name(i), "w"], &[&name(i + 1)], attributes.clone()))
            .collect(),
        initializer: vec![w],
        input: vec![value_info_f32("input", &dims)],
        output: vec![value_info_f32(&name(nodes), &dims)],
        ..Default::default()
    };
    let bytes = model(graph, 13, "hostile", "0", "").encode_to_vec();
    let network = kit::WasiNnNetwork::load(&bytes, "input").map_err(GuestError::Nn)?;
    let input = kit::Tensor::new(input_dims.to_vec(), vec![0.5; input_dims.iter().product()]);
    match kit::Network::run(&network, input) {
        Ok(_) => Err(GuestError::Internal(format!("heavy-{op}: the host ran all {nodes} nodes"))),
        Err(e) => Err(GuestError::Nn(e)),
    }
}

/// A one-node graph (`Relu`) whose name makes its bytes, and so the host's cache key, unique.
fn tiny_graph(i: usize) -> Vec<u8> {
    use onnx_proto::build::{Dim, model, node, value_info_f32};
    use prost::Message;
    let graph = onnx_proto::GraphProto {
        name: format!("tiny-{i}"),
        node: vec![node("Relu", "relu", &["input"], &["output"], vec![])],
        input: vec![value_info_f32("input", &[Dim::Fixed(4)])],
        output: vec![value_info_f32("output", &[Dim::Fixed(4)])],
        ..Default::default()
    };
    model(graph, 13, "hostile", "0", "").encode_to_vec()
}

fn many_graphs() -> Result<Vec<Face>, GuestError> {
    let mut kept = Vec::new();
    for i in 0..1000 {
        let graph = nn::graph::load(
            &[tiny_graph(i)],
            nn::graph::GraphEncoding::Onnx,
            nn::graph::ExecutionTarget::Cpu,
        )
        .map_err(|e| GuestError::Nn(format!("graph {i}: {}", e.data())))?;
        kept.push(graph);
    }
    Err(GuestError::Internal(format!("many-graphs: the host let the guest keep {} graphs", kept.len())))
}

fn many_tensors() -> Result<Vec<Face>, GuestError> {
    let kept: Vec<nn::tensor::Tensor> =
        (0..100_000).map(|_| nn::tensor::Tensor::new(&[1], nn::tensor::TensorType::Fp32, &[0; 4])).collect();
    Err(GuestError::Internal(format!("many-tensors: the host let the guest keep {} tensors", kept.len())))
}

fn big_tensors() -> Result<Vec<Face>, GuestError> {
    let data = vec![0u8; 4 << 20];
    let kept: Vec<nn::tensor::Tensor> =
        (0..2000).map(|_| nn::tensor::Tensor::new(&[1 << 20], nn::tensor::TensorType::Fp32, &data)).collect();
    Err(GuestError::Internal(format!(
        "big-tensors: the host let the guest keep {} tensors of 4 MiB",
        kept.len()
    )))
}

/// A graph `overflow-NAME` of `nodes` on one input of rank `rank` with symbolic dimensions.
fn dynamic_graph(
    name: &str,
    rank: usize,
    nodes: Vec<onnx_proto::NodeProto>,
    initializer: Vec<onnx_proto::TensorProto>,
) -> Vec<u8> {
    use onnx_proto::build::{Dim, model, value_info_f32};
    use prost::Message;
    let dims: Vec<Dim> = (0..rank).map(|i| Dim::Symbolic(format!("d{i}"))).collect();
    let output = nodes.last().map_or("input".to_string(), |n| n.output[0].clone());
    let graph = onnx_proto::GraphProto {
        name: format!("overflow-{name}"),
        node: nodes,
        initializer,
        input: vec![value_info_f32("input", &dims)],
        output: vec![value_info_f32(&output, &[])],
        ..Default::default()
    };
    model(graph, 13, "hostile", "0", "").encode_to_vec()
}

/// Loads `graph` and computes it on a tensor of `dims` holding `data`: the host's error, or
/// a message saying it went through.
fn attempt(graph: &[u8], dims: &[u32], data: &[u8]) -> Result<String, String> {
    use nn::graph::{ExecutionTarget, GraphEncoding};
    let graph = nn::graph::load(&[graph.to_vec()], GraphEncoding::Onnx, ExecutionTarget::Cpu)
        .map_err(|e| format!("load: {}", e.data()))?;
    let context = graph.init_execution_context().map_err(|e| format!("context: {}", e.data()))?;
    let tensor = nn::tensor::Tensor::new(dims, nn::tensor::TensorType::Fp32, data);
    match context.compute(vec![("input".into(), tensor)]) {
        Ok(outputs) => Ok(format!("the host computed it ({} outputs)", outputs.len())),
        Err(e) => Err(format!("compute: {}", e.data())),
    }
}

/// Every attack is expected to be refused with a wasi-nn error; the photo fails with all of
/// them, or names the first the host let through.
fn overflow() -> Result<Vec<Face>, GuestError> {
    use onnx_proto::build::{attr_ints, node, tensor_f32, tensor_i64};
    let relu =
        |rank| dynamic_graph("relu", rank, vec![node("Relu", "relu", &["input"], &["out"], vec![])], vec![]);
    let huge_initializer = {
        let mut w = tensor_f32("w", &[1], &[1.0]);
        w.dims = vec![1 << 40, 1 << 40, 1 << 40];
        dynamic_graph("initializer", 1, vec![node("Add", "add", &["input", "w"], &["out"], vec![])], vec![w])
    };
    let reshape = dynamic_graph(
        "reshape",
        1,
        vec![node("Reshape", "reshape", &["input", "shape"], &["out"], vec![])],
        vec![tensor_i64("shape", &[1 << 62, 1 << 62, 16])],
    );
    let dilated = dynamic_graph(
        "conv",
        4,
        vec![node(
            "Conv",
            "conv",
            &["input", "w"],
            &["out"],
            vec![attr_ints("dilations", &[1 << 62, 1 << 62])],
        )],
        vec![tensor_f32("w", &[1, 1, 5, 5], &[0.1; 25])],
    );
    let attacks: [(&str, Vec<u8>, Vec<u32>, Vec<u8>); 5] = [
        ("dimensions", relu(4), vec![u32::MAX; 4], vec![0; 4]),
        ("byte length", relu(2), vec![1 << 31, 1 << 31], vec![]),
        ("initializer", huge_initializer, vec![1], vec![0; 4]),
        ("reshape", reshape, vec![0], vec![]),
        ("dilated conv", dilated, vec![1, 1, 8, 8], vec![0; 256]),
    ];
    let mut refusals = Vec::new();
    for (what, graph, dims, data) in attacks {
        match attempt(&graph, &dims, &data) {
            Ok(went_through) => {
                return Err(GuestError::Internal(format!("overflow: {what}: {went_through}")));
            }
            Err(refused) => refusals.push(format!("{what}: {refused}")),
        }
    }
    Err(GuestError::Nn(format!("overflow: every size was refused: {}", refusals.join("; "))))
}

/// Every request is expected to be refused with an error; the photo fails with all of them, or
/// names the first the host let through.
fn area_requests(image: &Image) -> Result<Vec<Face>, GuestError> {
    use kit::area::{Region, Size, summarize};
    let (w, h, rgb) = (image.width, image.height, image.rgb.as_slice());
    let level = |width, height| [Size { width, height }];
    let summarized = |result: Result<_, String>| result.map(|_| "the host made it".to_string());
    let table = summarize(w, h, rgb, &[]).map_err(GuestError::Internal)?.0;
    let crop = |region: Region, side: u32| {
        table.crops(&[region], Size { width: side, height: side }).map(|_| "the host made it".to_string())
    };
    let many_levels = vec![Size { width: 1, height: 1 }; 5000];
    let attacks: [(&str, Result<String, String>); 7] = [
        ("byte length", summarized(summarize(w, h, &rgb[1..], &level(2, 2)))),
        ("many levels", summarized(summarize(w, h, rgb, &many_levels))),
        ("image size", summarized(summarize(u32::MAX, u32::MAX, rgb, &level(2, 2)))),
        ("empty level", summarized(summarize(w, h, rgb, &level(0, 5)))),
        ("huge level", summarized(summarize(w, h, rgb, &level(u32::MAX, u32::MAX)))),
        ("region", crop(Region { x: u32::MAX, y: 0, width: 2, height: 2 }, 4)),
        ("huge crops", crop(Region { x: 0, y: 0, width: 2, height: 2 }, 65535)),
    ];
    let mut refusals = Vec::new();
    for (what, outcome) in attacks {
        match outcome {
            Ok(made) => return Err(GuestError::Internal(format!("area: {what}: {made}"))),
            Err(refused) => refusals.push(format!("{what}: {refused}")),
        }
    }
    Err(GuestError::Nn(format!("area: every request was refused: {}", refusals.join("; "))))
}

fn area_hoard(image: &Image) -> Result<Vec<Face>, GuestError> {
    let mut kept = Vec::new();
    loop {
        let made = kit::area::summarize(image.width, image.height, &image.rgb, &[]);
        kept.push(made.map_err(GuestError::Nn)?);
    }
}

fn heavy_conv() -> Result<Vec<Face>, GuestError> {
    let w = onnx_proto::build::tensor_f32("w", &[32, 32, 3, 3], &[1e-3; 32 * 32 * 9]);
    let pads = onnx_proto::build::attr_ints("pads", &[1, 1, 1, 1]);
    heavy("Conv", 2000, &[1, 32, 256, 256], w, vec![pads])
}

fn heavy_matmul() -> Result<Vec<Face>, GuestError> {
    let w = onnx_proto::build::tensor_f32("w", &[4096, 4096], &vec![1e-4; 4096 * 4096]);
    heavy("MatMul", 8, &[4096, 4096], w, vec![])
}

impl Guest for Hostile {
    fn info() -> DetectorInfo {
        DetectorInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test guest that misbehaves on purpose (per `mode`) on images whose top-left pixel \
                          is pure red; elsewhere it finds one face in the central half of the image"
                .into(),
            params: param_specs(),
        }
    }

    fn detect(image: Image, params: Vec<Param>) -> Result<Vec<Face>, GuestError> {
        let specs = param_specs();
        let p = Params::new(&specs, &params)?;
        let mode = p.text("mode");
        if !MODES.iter().any(|(name, _)| *name == mode) {
            let known: Vec<&str> = MODES.iter().map(|(name, _)| *name).collect();
            return Err(GuestError::InvalidParam(format!(
                "unknown mode `{mode}`; known: {}",
                known.join(", ")
            )));
        }
        let port = u16::try_from(p.int("port")).map_err(|_| {
            GuestError::InvalidParam(format!("port must lie in 0..65535, got {}", p.int("port")))
        })?;

        let (w, h) = (image.width as usize, image.height as usize);
        if w == 0 || h == 0 || w.checked_mul(h).and_then(|n| n.checked_mul(3)) != Some(image.rgb.len()) {
            return Err(GuestError::InvalidInput(format!(
                "{}x{} image with {} bytes of RGB",
                image.width,
                image.height,
                image.rgb.len()
            )));
        }
        let (wf, hf) = (w as f32, h as f32);
        let trigger = image.rgb[..3] == [255, 0, 0];
        if !trigger {
            return Ok(vec![normal_face(wf, hf)]);
        }

        match mode {
            "loop" => spin(),
            "alloc" => hoard(),
            "trap" => trap(),
            "panic" => panic!("hostile guest panics on purpose"),
            "open-file" => open_file(wf, hf),
            "read-env" => read_env(wf, hf),
            "socket" => socket(wf, hf, port),
            "clock" => clock(wf, hf),
            "many-faces" => Ok(vec![normal_face(wf, hf); 20_000]),
            "huge-answer" => Ok(vec![normal_face(wf, hf); 10_000_000]),
            "nan-face" => {
                let mut face = normal_face(wf, hf);
                face.bbox.x1 = f32::NAN;
                Ok(vec![face])
            }
            "outside" => {
                Ok(vec![face_in(Bbox { x1: wf + 10.0, y1: hf + 10.0, x2: wf + 50.0, y2: hf + 50.0 }, 0.5)])
            }
            "bad-nn" => bad_nn(),
            "heavy-conv" => heavy_conv(),
            "heavy-matmul" => heavy_matmul(),
            "many-graphs" => many_graphs(),
            "many-tensors" => many_tensors(),
            "big-tensors" => big_tensors(),
            "overflow" => overflow(),
            "area" => area_requests(&image),
            "area-hoard" => area_hoard(&image),
            _ => Ok(vec![normal_face(wf, hf)]), // "none"
        }
    }
}
