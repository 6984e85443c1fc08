//! What every refacen guest shares: the bindings of refacen's WIT worlds (vendored in `wit/`,
//! the same bytes as the repository's `wit/`), the macros that export a detector or a model,
//! neural networks as plain f32 tensors over wasi-nn, and parameter lookup with declared
//! defaults.
//!
//! A guest is a `cdylib` crate built for `wasm32-wasip2` into a WebAssembly component. It
//! implements [`detector::Guest`] (faces and five landmarks per photo) or [`embedder::Guest`]
//! (a facen per normalized face) for a type and exports it with [`export_detector!`] or
//! [`export_embedder!`]. Its networks run in the host through wasi-nn: [`WasiNnNetwork`]
//! loads an ONNX graph and runs it on [`Tensor`]s, or on tensors the host made from the photo
//! ([`area`]: a detector's image pyramid and crops). `refacen guests new` writes such a crate;
//! `refacen guests check` checks the component it builds; docs/writing-guests.md is the guide.
//!
//! A detector with one parameter, finding no faces yet:
//!
//! ```ignore
//! use kit::detector::{DetectorInfo, Face, Guest, GuestError, Image, Param};
//! use kit::params::{self, Params};
//!
//! struct MyDetector;
//! kit::export_detector!(MyDetector);
//!
//! impl Guest for MyDetector {
//!     fn info() -> DetectorInfo {
//!         DetectorInfo {
//!             name: "my-detector".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "Finds faces".into(),
//!             params: vec![params::int("min-face-size", 40, "smallest face, pixels")],
//!         }
//!     }
//!
//!     fn detect(image: Image, set: Vec<Param>) -> Result<Vec<Face>, GuestError> {
//!         kit::check_image(&image)?;
//!         let specs = Self::info().params;
//!         let min_face_size = Params::new(&specs, &set)?.int("min-face-size");
//!         let _ = min_face_size; // run a network with kit::WasiNnNetwork here
//!         Ok(Vec::new())
//!     }
//! }
//! ```
//!
//! The pre/post-processing code of a guest can be written against [`Network`], so that it
//! also builds natively (for tests and benchmarks) with another implementation of that trait.

// The world bindings name kit's own items as `kit::…`, which must also resolve where the
// export macros expand: in the guest's crate.
extern crate self as kit;

pub mod params;

pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "refacen:face/guest-kit",
        generate_all,
    });
}

/// Generates the bindings of a guest world with kit's own shared types ([`types`],
/// [`bindings::wasi::nn`]), so that one value means the same thing to every module of a
/// guest, and a public export macro that expands in the guest's crate. The pairs after them
/// map the interfaces that only that world imports.
macro_rules! world_bindings {
    ($world:tt, $module:tt, $export_macro:tt $(, $interface:literal: $path:path)*) => {
        wit_bindgen::generate!({
            path: "wit",
            world: $world,
            with: {
                "refacen:face/types@0.1.0": kit::types,
                "wasi:nn/tensor@0.2.0-rc-2024-10-28": kit::bindings::wasi::nn::tensor,
                "wasi:nn/graph@0.2.0-rc-2024-10-28": kit::bindings::wasi::nn::graph,
                "wasi:nn/inference@0.2.0-rc-2024-10-28": kit::bindings::wasi::nn::inference,
                "wasi:nn/errors@0.2.0-rc-2024-10-28": kit::bindings::wasi::nn::errors,
                $($interface: $path,)*
            },
            pub_export_macro: true,
            default_bindings_module: $module,
            export_macro_name: $export_macro,
        });
    };
}

/// The `detector` world, for guests that find faces: the `Guest` trait a detector implements
/// and [`export_detector!`], which exports an implementation from the guest's crate.
pub mod detector {
    world_bindings!(
        "refacen:face/detector",
        "kit::detector",
        "export_detector",
        "refacen:face/area@0.1.0": kit::area
    );
}

/// The `embedder` world, for face-recognition models: the `Guest` trait an embedder
/// implements and [`export_embedder!`], which exports an implementation from the guest's crate.
pub mod embedder {
    world_bindings!("refacen:face/embedder", "kit::embedder", "export_embedder");
}

/// `export_detector!(MyDetector)` exports `MyDetector`, which implements [`detector::Guest`],
/// as the guest component's `detector` world.
pub use detector::export_detector;
/// `export_embedder!(MyModel)` exports `MyModel`, which implements [`embedder::Guest`], as
/// the guest component's `embedder` world.
pub use embedder::export_embedder;

/// Area resampling of an image by the host into tensors it holds (`refacen:face/area`): a
/// detector's image pyramid and crops, made natively and never copied into the guest.
pub use bindings::refacen::face::area;
pub use bindings::refacen::face::types;
use bindings::wasi::nn::{graph, tensor};
use types::{GuestError, Image};

/// A dense row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(dims: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        Tensor { dims, data }
    }
}

/// A network's output as the host lowered it into the guest's memory, its FP32 values read
/// where they lie: one copy of them fewer than a [`Tensor`] (a detector's outputs are MBs per
/// photo).
#[derive(Debug)]
pub struct Output {
    pub dims: Vec<usize>,
    bytes: Vec<u8>,
    /// The values copied out, only where the bytes do not lie at an f32's alignment (or the
    /// target is big-endian).
    copied: Option<Vec<f32>>,
}

impl Output {
    fn new(dims: Vec<usize>, bytes: Vec<u8>) -> Self {
        let in_place = bytes.as_ptr().cast::<f32>().is_aligned()
            && bytes.len().is_multiple_of(4)
            && cfg!(target_endian = "little");
        let copied = (!in_place).then(|| from_bytes(&bytes));
        Output { dims, bytes, copied }
    }

    /// The values, row-major.
    pub fn values(&self) -> &[f32] {
        match &self.copied {
            Some(values) => values,
            // SAFETY: `new` found the bytes at f32's alignment and a whole number of values
            // long; every bit pattern is a valid f32, and on this little-endian target the
            // bytes are the values' own. The slice borrows `self.bytes`, which nothing writes.
            None => unsafe {
                std::slice::from_raw_parts(self.bytes.as_ptr().cast::<f32>(), self.bytes.len() / 4)
            },
        }
    }

    pub fn into_tensor(self) -> Tensor {
        let data = match self.copied {
            Some(values) => values,
            None => from_bytes(&self.bytes),
        };
        Tensor::new(self.dims, data)
    }
}

/// dlib's face chip (`get_face_chip_details(shape, 150, 0.25)`, from its 68-point mean face
/// shape) as refacen's canonical five-point template, in 150x150 coordinates. These are the
/// very f32 values of the host's `imaging::align::CANONICAL`: a model declaring this template
/// gets the host's normalized faces as they are, without a second resampling.
pub fn canonical_template() -> types::AlignmentTemplate {
    let p = |x, y| types::Point { x, y };
    types::AlignmentTemplate {
        width: 150,
        height: 150,
        landmarks: types::Landmarks {
            left_eye: p(47.549183, 46.599033),
            right_eye: p(100.47613, 46.599033),
            nose: p(74.0127, 76.5625),
            mouth_left: p(50.4149, 103.0233),
            mouth_right: p(97.6104, 103.0233),
        },
    }
}

/// Checks that `image` holds `width * height * 3` bytes, as `detect` requires, and returns
/// its width and height.
pub fn check_image(image: &Image) -> Result<(usize, usize), GuestError> {
    let (w, h) = (image.width as usize, image.height as usize);
    if w.checked_mul(h).and_then(|p| p.checked_mul(3)) != Some(image.rgb.len()) {
        return Err(GuestError::InvalidInput(format!(
            "{}x{} image with {} bytes of RGB",
            image.width,
            image.height,
            image.rgb.len()
        )));
    }
    Ok((w, h))
}

/// What a guest loads on its first call and keeps for the instance's life (its networks,
/// parsed models). Declare it in a `thread_local!`: a component instance runs one call at a
/// time, on one thread.
pub struct Loaded<T>(std::cell::OnceCell<T>);

impl<T> Loaded<T> {
    pub const fn new() -> Self {
        Loaded(std::cell::OnceCell::new())
    }

    /// The loaded value: `load` runs on the first call, and again on the next one when it
    /// failed.
    pub fn get_or_load<E>(&self, load: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(loaded) = self.0.get() {
            return Ok(loaded);
        }
        let loaded = load()?;
        Ok(self.0.get_or_init(|| loaded))
    }
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A detected face: box `[x1, y1, x2, y2]`, score, and the five landmarks in the WIT order
/// (left eye, right eye, nose, mouth left, mouth right; "left" as seen in the image).
pub fn face(bbox: [f32; 4], score: f32, landmarks: [[f32; 2]; 5]) -> types::Face {
    let [x1, y1, x2, y2] = bbox;
    let p = landmarks.map(|[x, y]| types::Point { x, y });
    types::Face {
        bbox: types::Bbox { x1, y1, x2, y2 },
        score,
        landmarks: types::Landmarks {
            left_eye: p[0],
            right_eye: p[1],
            nose: p[2],
            mouth_left: p[3],
            mouth_right: p[4],
        },
    }
}

/// Checks that face `index` of an `embed` call is a `width` x `height` RGB image, as the
/// model's template declares.
pub fn check_face(index: usize, face: &Image, width: u32, height: u32) -> Result<(), GuestError> {
    if face.width != width || face.height != height {
        return Err(GuestError::InvalidInput(format!(
            "face {index} is {}x{}, expected {width}x{height}",
            face.width, face.height
        )));
    }
    let expected = width as usize * height as usize * 3;
    if face.rgb.len() != expected {
        return Err(GuestError::InvalidInput(format!(
            "face {index} has {} bytes of RGB, expected {expected}",
            face.rgb.len()
        )));
    }
    Ok(())
}

/// A neural network with one input.
pub trait Network {
    /// Runs the network; outputs come in the graph's output order.
    fn run(&self, input: Tensor) -> Result<Vec<Tensor>, String>;
}

/// An ONNX graph executed by the host through wasi-nn.
pub struct WasiNnNetwork {
    input_name: String,
    context: bindings::wasi::nn::inference::GraphExecutionContext,
    // Kept alive for the context's sake.
    _graph: graph::Graph,
}

impl WasiNnNetwork {
    /// Hands `onnx` to the host and prepares an execution context. `input_name` is the
    /// graph's input.
    pub fn load(onnx: &[u8], input_name: &str) -> Result<Self, String> {
        let graph = graph::load(&[onnx.to_vec()], graph::GraphEncoding::Onnx, graph::ExecutionTarget::Cpu)
            .map_err(|e| describe(&e))?;
        let context = graph.init_execution_context().map_err(|e| describe(&e))?;
        Ok(WasiNnNetwork { input_name: input_name.to_string(), context, _graph: graph })
    }
}

impl WasiNnNetwork {
    /// Runs the network on a tensor the host already holds (made by [`area`], say), which
    /// the compute takes as it is.
    pub fn run_held(&self, input: tensor::Tensor) -> Result<Vec<Output>, String> {
        let outputs =
            self.context.compute(vec![(self.input_name.clone(), input)]).map_err(|e| describe(&e))?;
        outputs
            .into_iter()
            .map(|(name, t)| {
                if t.ty() != tensor::TensorType::Fp32 {
                    return Err(format!("output `{name}` is not FP32"));
                }
                Ok(Output::new(t.dimensions().iter().map(|&d| d as usize).collect(), t.data()))
            })
            .collect()
    }
}

impl Network for WasiNnNetwork {
    fn run(&self, input: Tensor) -> Result<Vec<Tensor>, String> {
        let dims: Vec<u32> = input.dims.iter().map(|&d| d as u32).collect();
        let input = tensor::Tensor::new(&dims, tensor::TensorType::Fp32, as_bytes(&input.data));
        Ok(self.run_held(input)?.into_iter().map(Output::into_tensor).collect())
    }
}

/// A face-recognition network as an embedder guest runs it: its ONNX graph and the shapes
/// around it.
pub struct EmbedderNetwork {
    /// The ONNX graph, embedded in the guest.
    pub onnx: &'static [u8],
    /// The graph's input.
    pub input_name: &'static str,
    /// Side of the square faces `embed` takes, in pixels (the template's size).
    pub face_size_px: u32,
    /// Values per facen: the graph's output is `[faces, facen_size]`.
    pub facen_size: usize,
}

thread_local! {
    /// The embedder's network, loaded on the first `embed` and kept for the instance's life,
    /// with the address of the graph it was loaded from.
    static LOADED_EMBEDDER: Loaded<(usize, WasiNnNetwork)> = const { Loaded::new() };
}

impl EmbedderNetwork {
    /// An embedder's `embed`: checks that every face is the template's size, lays all of them
    /// out as one batch with `batch`, runs it in one wasi-nn compute on the network (loaded on
    /// first use, for the instance's life; one `EmbedderNetwork` per guest) and returns the
    /// output, checked to be `[faces, facen_size]`.
    pub fn embed(
        &self,
        faces: Vec<Image>,
        batch: impl FnOnce(&[Image]) -> Tensor,
    ) -> Result<Tensor, GuestError> {
        let (size, facen_size) = (self.face_size_px, self.facen_size);
        for (i, face) in faces.iter().enumerate() {
            check_face(i, face, size, size)?;
        }
        let count = faces.len();
        if count == 0 {
            return Ok(Tensor::new(vec![0, facen_size], Vec::new()));
        }
        let input = batch(&faces);
        drop(faces);
        let graph = self.onnx.as_ptr() as usize;
        let outputs = LOADED_EMBEDDER.with(|embedder| {
            let load = || WasiNnNetwork::load(self.onnx, self.input_name).map(|network| (graph, network));
            match embedder.get_or_load(load).map_err(GuestError::Nn)? {
                (loaded, network) if *loaded == graph => network.run(input).map_err(GuestError::Nn),
                _ => Err(GuestError::Internal(
                    "kit::EmbedderNetwork keeps one network per guest; this guest embeds with two".into(),
                )),
            }
        })?;
        match outputs.into_iter().next() {
            Some(t) if t.dims == [count, facen_size] && t.data.len() == count * facen_size => Ok(t),
            Some(t) => Err(GuestError::Internal(format!(
                "the network returned a {:?} tensor, expected [{count}, {facen_size}]",
                t.dims
            ))),
            None => Err(GuestError::Internal("the network returned no output".into())),
        }
    }
}

/// wasi-nn tensor data is little-endian f32, as WebAssembly memory is: no conversion needed.
fn as_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte is a valid u8; the length covers the same memory.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    if cfg!(target_endian = "big") {
        return bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    }
    // One copy (in WebAssembly a `memory.copy`, which the host runs as `memcpy`) into memory
    // that is not zeroed first, instead of a loop over the values at the sandbox's speed
    // (a detector's outputs are MBs per photo).
    let n = bytes.len() / 4;
    let mut values = Vec::<f32>::with_capacity(n);
    // SAFETY: the capacity is at least `n` values, `n * 4` bytes, which the copy fills from
    // `bytes` before the length covers them; every bit pattern is a valid f32, and on this
    // little-endian target the bytes are the values' own.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), values.as_mut_ptr().cast::<u8>(), n * 4);
        values.set_len(n);
    }
    values
}

fn describe(e: &bindings::wasi::nn::errors::Error) -> String {
    format!("{:?}: {}", e.code(), e.data())
}
