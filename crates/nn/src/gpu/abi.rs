//! How the kernels' ABI is declared (params.rs declares it): each params struct once, as a
//! `#[repr(C)]` Rust struct and its WGSL struct, with the storage buffers its entry points
//! bind; the op codes kernels are specialized on and the shared array dimensions, each a Rust
//! item and a WGSL constant. `abi_tests` checks the WGSL side against the Rust one with naga.

use bytemuck::Pod;

use super::kernels::Shader;

/// Declares constants shared with the WGSL: each a Rust `usize` and a WGSL `u32` of the same
/// name (the params structs size their arrays with them).
macro_rules! shared_dims {
    ($( $(#[doc = $doc:literal])* $name:ident = $value:literal; )+) => {
        $( $(#[doc = $doc])* pub const $name: usize = $value; )+

        /// Their WGSL declarations.
        const WGSL_DIMS: &str = concat!($( $("//", $doc, "\n",)* "const ", stringify!($name), ": u32 = ", $value, "u;\n", )+);
    };
}
pub(crate) use shared_dims;

/// A struct of the ABI, declared once for both languages by `abi_struct!`.
pub trait AbiStruct: Pod {
    /// Its WGSL declaration, prepended to the files that use it (they do not declare it).
    const WGSL: &'static str;

    /// The fields in declaration order, for the WGSL reflection test.
    #[cfg(test)]
    fn fields() -> Vec<Field>;
}

/// A kernel's parameters, written to binding 0 of its dispatch.
pub trait KernelParams: AbiStruct {
    /// The shader file whose entry points read it.
    const SHADER: Shader;
    /// The entry points that read it.
    const ENTRIES: &'static [&'static str];
    /// The storage buffers those entry points bind after it: the inputs, then the output.
    const BUFFERS: &'static [StorageBuffer];
}

/// How a kernel accesses one of its storage buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// An input.
    Read,
    /// The output.
    ReadWrite,
}

impl Access {
    /// The WGSL access mode.
    pub fn wgsl(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::ReadWrite => "read_write",
        }
    }
}

/// A storage buffer of group 0 that a kernel binds after its params, an `array` of `element`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageBuffer {
    /// The WGSL variable the entry points read or write.
    pub name: &'static str,
    /// Its binding: 1 + its place in the params struct's `BUFFERS`.
    pub binding: u32,
    /// The element type as WGSL spells it: `f32`, `u32`, `vec4u`.
    pub element: &'static str,
    pub access: Access,
    /// Its doc comment, lines ending in `\n`, repeated in the WGSL.
    doc: &'static str,
}

impl StorageBuffer {
    /// A buffer of `kernel_params!`, numbered by `numbered`.
    pub(crate) const fn new(
        name: &'static str,
        element: &'static str,
        access: Access,
        doc: &'static str,
    ) -> Self {
        StorageBuffer { name, binding: 0, element, access, doc }
    }

    /// Whether `other` is the same WGSL variable (its doc comment aside).
    pub(crate) fn same_variable(&self, other: &StorageBuffer) -> bool {
        StorageBuffer { doc: "", ..*self } == StorageBuffer { doc: "", ..*other }
    }

    /// Its WGSL declaration, doc comment first.
    pub(crate) fn wgsl(&self) -> String {
        let doc: String = self.doc.lines().map(|line| format!("//{line}\n")).collect();
        let Self { name, binding, element, access, .. } = self;
        format!(
            "{doc}@group(0) @binding({binding}) var<storage, {}> {name}: array<{element}>;\n",
            access.wgsl()
        )
    }
}

/// `buffers` bound in their order from binding 1 on (binding 0 holds the params).
pub(crate) const fn numbered<const N: usize>(mut buffers: [StorageBuffer; N]) -> [StorageBuffer; N] {
    let mut i = 0;
    while i < N {
        buffers[i].binding = i as u32 + 1;
        i += 1;
    }
    buffers
}

/// One field of a params struct as the reflection test compares it with the WGSL.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    /// The type as WGSL spells it: `u32`, `f32`, `array<u32, 8>`.
    pub wgsl_type: String,
}

/// How WGSL spells a field type, from the Rust type (the test's side of the comparison).
#[cfg(test)]
pub trait WgslType {
    fn wgsl() -> String;
}

/// How the generated WGSL declaration spells a field type: scalars as in Rust, `[T; N]` as
/// `array<T, N>` (N one of the `shared_dims!` constants, which the WGSL declares too).
macro_rules! wgsl_type {
    ([$elem:ident; $len:ident]) => {
        concat!("array<", stringify!($elem), ", ", stringify!($len), ">")
    };
    ($scalar:ident) => {
        stringify!($scalar)
    };
}
pub(crate) use wgsl_type;

/// Declares a struct of the ABI, `Name { field: type, ... }`: a `#[repr(C)]` Rust struct and,
/// in `AbiStruct::WGSL`, the WGSL struct of the same name, fields and doc comments. Fields are
/// 4-byte scalars, arrays of them or other such structs, so both languages lay them out
/// alike; `abi_tests` checks it with naga.
macro_rules! abi_struct {
    (
        $(#[doc = $doc:literal])*
        $name:ident {
            $( $(#[doc = $field_doc:literal])* $field:ident: $ty:tt, )+
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, ::bytemuck::Pod, ::bytemuck::Zeroable)]
        pub struct $name {
            $( $(#[doc = $field_doc])* pub $field: $ty, )+
        }

        impl $crate::gpu::abi::AbiStruct for $name {
            const WGSL: &'static str = concat!(
                $("//", $doc, "\n",)*
                "struct ", stringify!($name), " {\n",
                $( $("    //", $field_doc, "\n",)* "    ", stringify!($field), ": ", $crate::gpu::abi::wgsl_type!($ty), ",\n", )+
                "}\n",
            );

            #[cfg(test)]
            fn fields() -> Vec<$crate::gpu::abi::Field> {
                vec![$($crate::gpu::abi::Field {
                    name: stringify!($field).to_string(),
                    offset: std::mem::offset_of!($name, $field),
                    wgsl_type: <$ty as $crate::gpu::abi::WgslType>::wgsl(),
                }),+]
            }
        }

        #[cfg(test)]
        impl $crate::gpu::abi::WgslType for $name {
            fn wgsl() -> String {
                stringify!($name).into()
            }
        }
    };
}
pub(crate) use abi_struct;

/// Declares structs of the ABI that params structs embed, declared in every shader module.
macro_rules! shared_structs {
    ($( $(#[doc = $doc:literal])* $name:ident $body:tt )+) => {
        $( $crate::gpu::abi::abi_struct!($(#[doc = $doc])* $name $body); )+

        /// Their WGSL declarations.
        const WGSL_SHARED: &[&str] = &[$( <$name as $crate::gpu::abi::AbiStruct>::WGSL ),+];
    };
}
pub(crate) use shared_structs;

/// Declares params structs, `Name in Shader [entry points] as var reads [input: element, ...]
/// writes output: element { field: type, ... }` (see `abi_struct!`), each read by the entry
/// points listed, through the WGSL variable `var` that the declarations bind at binding 0 of
/// group 0, and the storage buffers those entry points bind after it: the inputs (read) at
/// bindings 1..=n, in order, and the output (read_write) at binding n + 1, each an `array` of
/// its element type (`f32`, `u32`, `vec4u`). The files declare none of these.
macro_rules! kernel_params {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident in $shader:ident [$($entry:literal),+] as $var:ident
        reads [$( $(#[doc = $in_doc:literal])* $input:ident: $in_elem:ident ),+ $(,)?]
        writes $output:ident: $out_elem:ident
        $body:tt
    )+) => {
        $(
            $crate::gpu::abi::abi_struct!($(#[doc = $doc])* $name $body);

            impl $crate::gpu::abi::KernelParams for $name {
                const SHADER: Shader = $crate::gpu::kernels::Shader::$shader;
                const ENTRIES: &'static [&'static str] = &[$($entry),+];
                const BUFFERS: &'static [$crate::gpu::abi::StorageBuffer] = &$crate::gpu::abi::numbered([
                    $( $crate::gpu::abi::StorageBuffer::new(
                        stringify!($input),
                        stringify!($in_elem),
                        $crate::gpu::abi::Access::Read,
                        concat!($($in_doc, "\n",)*),
                    ), )+
                    $crate::gpu::abi::StorageBuffer::new(stringify!($output), stringify!($out_elem), $crate::gpu::abi::Access::ReadWrite, ""),
                ]);
            }
        )+

        /// Every params struct's kernels.
        const KERNELS: &[$crate::gpu::abi::KernelAbi] = &[$($crate::gpu::abi::KernelAbi {
            shader: $crate::gpu::kernels::Shader::$shader,
            entries: <$name as $crate::gpu::abi::KernelParams>::ENTRIES,
            wgsl: <$name as $crate::gpu::abi::AbiStruct>::WGSL,
            params: concat!("@group(0) @binding(0) var<storage, read> ", stringify!($var), ": ", stringify!($name), ";\n"),
            buffers: <$name as $crate::gpu::abi::KernelParams>::BUFFERS,
        }),+];
    };
}
pub(crate) use kernel_params;

/// A params struct and its entry points' bindings, as `wgsl_declarations` and
/// `storage_buffers` look them up by shader.
pub(crate) struct KernelAbi {
    pub shader: Shader,
    pub entries: &'static [&'static str],
    /// The struct's WGSL declaration.
    pub wgsl: &'static str,
    /// The WGSL of its binding-0 variable.
    pub params: &'static str,
    pub buffers: &'static [StorageBuffer],
}

/// Declares `#[repr(u32)]` code enums and their WGSL constants: `Name in Shader prefix
/// "PREFIX_" { Variant = value as "WGSL_CONSTANT", ... }`. The constants are declared in every
/// shader module (`WGSL_CODES`); the reflection test checks that the module's constants with
/// the prefix are exactly the variants.
macro_rules! kernel_codes {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident in $shader:ident prefix $prefix:literal {
            $( $(#[doc = $variant_doc:literal])* $variant:ident = $value:literal as $wgsl:literal, )+
        }
    )+) => {
        $(
            $(#[doc = $doc])*
            #[repr(u32)]
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            pub enum $name {
                $( $(#[doc = $variant_doc])* $variant = $value, )+
            }

            #[cfg(test)]
            impl $name {
                pub const SHADER: Shader = $crate::gpu::kernels::Shader::$shader;
                pub const WGSL_PREFIX: &'static str = $prefix;
                /// Each variant's WGSL constant and value.
                pub const WGSL: &'static [(&'static str, u32)] = &[$( ($wgsl, $name::$variant as u32) ),+];
            }
        )+

        /// Every code's WGSL declaration.
        const WGSL_CODES: &str = concat!($(
            $("//", $doc, "\n",)*
            $( $("//", $variant_doc, "\n",)* "const ", $wgsl, ": u32 = ", $value, "u;\n", )+
        )+);
    };
}
pub(crate) use kernel_codes;

#[cfg(test)]
mod wgsl_types {
    use super::WgslType;

    macro_rules! scalar {
        ($($ty:ident)+) => {$(
            impl WgslType for $ty {
                fn wgsl() -> String {
                    stringify!($ty).into()
                }
            }
        )+};
    }
    scalar!(u32 i32 f32);

    impl<T: WgslType, const N: usize> WgslType for [T; N] {
        fn wgsl() -> String {
            format!("array<{}, {N}>", T::wgsl())
        }
    }
}
