//! Host bindings of refacen's two worlds (wit/refacen.wit). Both share the `wasi:nn` host
//! (`wasi_nn`) and one set of `refacen:face/types`.

pub(crate) mod detector {
    wasmtime::component::bindgen!({
        world: "refacen:face/detector",
        path: "../../wit",
        // Arguments borrow from the host's buffers: the photo is lowered into the guest's
        // memory straight from the decoded image, not from a clone made per call.
        ownership: Borrowing { duplicate_if_necessary: true },
        with: { "wasi:nn": crate::wasi_nn::generated::wasi::nn },
    });
}

pub(crate) mod embedder {
    wasmtime::component::bindgen!({
        world: "refacen:face/embedder",
        path: "../../wit",
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "wasi:nn": crate::wasi_nn::generated::wasi::nn,
            "refacen:face/types": super::detector::refacen::face::types,
        },
    });
}

pub(crate) use detector::refacen::face::types;
