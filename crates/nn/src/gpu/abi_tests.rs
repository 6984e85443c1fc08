//! The host↔WGSL ABI, checked by reflecting the shaders through naga (the WGSL front end
//! wgpu compiles them with): every params struct of `params.rs` against the WGSL struct of
//! the same name (field names, order, offsets, types, size), every entry point against the
//! struct it reads and the storage buffers its struct declares, and the op-code enums against
//! the WGSL constants. Needs no GPU.

use std::collections::BTreeSet;

use wgpu::naga;

use super::abi::*;
use super::kernels::Shader;
use super::params::*;

/// Every params struct of the host: (shader, WGSL struct name, entry points, size, fields).
struct HostParams {
    shader: Shader,
    name: &'static str,
    entries: &'static [&'static str],
    size: usize,
    fields: Vec<Field>,
    /// The storage buffers its entry points bind after it.
    buffers: &'static [StorageBuffer],
}

fn host<P: KernelParams>() -> HostParams {
    let path = std::any::type_name::<P>();
    HostParams {
        shader: P::SHADER,
        name: path.rsplit("::").next().expect("a type name"),
        entries: P::ENTRIES,
        size: size_of::<P>(),
        fields: P::fields(),
        buffers: P::BUFFERS,
    }
}

fn host_params() -> Vec<HostParams> {
    vec![
        // Declared in every module: checked in one.
        HostParams {
            shader: Shader::Conv,
            name: "Window2d",
            entries: &[],
            size: size_of::<Window2d>(),
            fields: Window2d::fields(),
            buffers: &[],
        },
        HostParams {
            shader: Shader::Conv,
            name: "Broadcast",
            entries: &[],
            size: size_of::<Broadcast>(),
            fields: Broadcast::fields(),
            buffers: &[],
        },
        host::<ConvParams>(),
        host::<GemmParams>(),
        host::<PoolParams>(),
        host::<GlobalPoolParams>(),
        host::<SoftmaxParams>(),
        host::<UnaryParams>(),
        host::<BinaryParams>(),
        host::<BatchNormParams>(),
        host::<TransposeParams>(),
        host::<ConcatParams>(),
        host::<IndexMapParams>(),
        host::<ResizeAxisParams>(),
        host::<ReduceParams>(),
        host::<ConvTransposeParams>(),
    ]
}

/// The shader's module as wgpu compiles it (prelude included), validated.
fn reflect(shader: Shader) -> (naga::Module, naga::valid::ModuleInfo) {
    let source = shader.source();
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("shaders/{}: {}", shader.file(), e.emit_to_string(&source)));
    let info =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("shaders/{}: {}", shader.file(), e.emit_to_string(&source)));
    (module, info)
}

fn wgsl_type(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    match &module.types[ty].inner {
        naga::TypeInner::Scalar(scalar) => match (scalar.kind, scalar.width) {
            (naga::ScalarKind::Uint, 4) => "u32".into(),
            (naga::ScalarKind::Sint, 4) => "i32".into(),
            (naga::ScalarKind::Float, 4) => "f32".into(),
            other => format!("{other:?}"),
        },
        naga::TypeInner::Array { base, size: naga::ArraySize::Constant(n), .. } => {
            format!("array<{}, {n}>", wgsl_type(module, *base))
        }
        naga::TypeInner::Vector { size, scalar } => {
            let suffix = match scalar.kind {
                naga::ScalarKind::Uint => "u",
                naga::ScalarKind::Sint => "i",
                _ => "f",
            };
            format!("vec{}{suffix}", *size as u8)
        }
        naga::TypeInner::Struct { .. } => module.types[ty].name.clone().unwrap_or_default(),
        other => format!("{other:?}"),
    }
}

/// The WGSL struct `name`'s fields (as the host lists them) and size, if the module has it.
fn wgsl_struct(module: &naga::Module, name: &str) -> Option<(Vec<Field>, usize)> {
    module.types.iter().find_map(|(_, ty)| match &ty.inner {
        naga::TypeInner::Struct { members, span } if ty.name.as_deref() == Some(name) => {
            let fields = members
                .iter()
                .map(|m| Field {
                    name: m.name.clone().unwrap_or_default(),
                    offset: m.offset as usize,
                    wgsl_type: wgsl_type(module, m.ty),
                })
                .collect();
            Some((fields, *span as usize))
        }
        _ => None,
    })
}

/// Reflects every shader module and runs `check` on it with the host structs it should
/// declare; fails with every problem the checks report.
fn check_modules(
    check: impl Fn(Shader, &naga::Module, &naga::valid::ModuleInfo, &[&HostParams], &mut Vec<String>),
) {
    let hosts = host_params();
    let mut problems = Vec::new();
    for shader in Shader::ALL {
        let (module, info) = reflect(shader);
        let own: Vec<&HostParams> = hosts.iter().filter(|h| h.shader == shader).collect();
        check(shader, &module, &info, &own, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_params_struct_matches_its_wgsl_struct() {
    check_modules(|shader, module, _, hosts, problems| {
        for host in hosts {
            let Some((fields, size)) = wgsl_struct(module, host.name) else {
                problems.push(format!("the module of shaders/{} has no struct {}", shader.file(), host.name));
                continue;
            };
            if let Some(i) =
                (0..fields.len().max(host.fields.len())).find(|&i| fields.get(i) != host.fields.get(i))
            {
                problems.push(format!(
                    "{} differs between the host and shaders/{} at field #{i}: host {:?}, wgsl {:?}",
                    host.name,
                    shader.file(),
                    host.fields.get(i),
                    fields.get(i)
                ));
            }
            if size != host.size {
                problems.push(format!("{}: {} bytes on the host, {size} in the WGSL", host.name, host.size));
            }
        }
        // A params struct declared by hand in the shader file, not by params.rs.
        for (_, ty) in module.types.iter() {
            let Some(name) = ty.name.as_deref() else { continue };
            let is_struct = matches!(ty.inner, naga::TypeInner::Struct { .. });
            if is_struct && name.ends_with("Params") && !hosts.iter().any(|h| h.name == name) {
                problems.push(format!(
                    "shaders/{} declares {name}: declare it in params.rs (kernel_params!) instead",
                    shader.file()
                ));
            }
        }
    });
}

/// Every entry point reads, at binding 0, the struct the host writes for it.
#[test]
fn every_entry_point_reads_the_params_the_host_writes() {
    check_modules(|shader, module, info, hosts, problems| {
        for (index, entry) in module.entry_points.iter().enumerate() {
            let uses = info.get_entry_point(index);
            let read: Vec<&str> = module
                .global_variables
                .iter()
                .filter(|(handle, var)| {
                    var.binding.as_ref().is_some_and(|b| b.group == 0 && b.binding == 0)
                        && !uses[*handle].is_empty()
                })
                .filter_map(|(_, var)| module.types[var.ty].name.as_deref())
                .collect();
            let written: Vec<&str> =
                hosts.iter().filter(|h| h.entries.contains(&entry.name.as_str())).map(|h| h.name).collect();
            if read != written {
                problems.push(format!(
                    "shaders/{}: entry point `{}` reads {read:?} at binding 0, the host writes {written:?}",
                    shader.file(),
                    entry.name
                ));
            }
        }
        for host in hosts {
            for entry in host.entries {
                if !module.entry_points.iter().any(|e| e.name == *entry) {
                    problems.push(format!(
                        "shaders/{} has no entry point `{entry}` ({})",
                        shader.file(),
                        host.name
                    ));
                }
            }
        }
    });
}

/// A storage buffer after binding 0 as the module declares it, or as the host does.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Buffer {
    name: String,
    binding: u32,
    element: String,
    access: Access,
}

impl From<&StorageBuffer> for Buffer {
    fn from(b: &StorageBuffer) -> Self {
        Buffer { name: b.name.into(), binding: b.binding, element: b.element.into(), access: b.access }
    }
}

/// The module's storage buffers of group 0 after binding 0, whoever declared them.
fn wgsl_buffers(module: &naga::Module) -> Vec<(naga::Handle<naga::GlobalVariable>, Buffer)> {
    module
        .global_variables
        .iter()
        .filter_map(|(handle, var)| {
            let binding = var.binding.as_ref().filter(|b| b.group == 0 && b.binding > 0)?;
            let naga::AddressSpace::Storage { access } = var.space else { return None };
            let element = match module.types[var.ty].inner {
                naga::TypeInner::Array { base, .. } => wgsl_type(module, base),
                _ => wgsl_type(module, var.ty),
            };
            let access =
                if access.contains(naga::StorageAccess::STORE) { Access::ReadWrite } else { Access::Read };
            let name = var.name.clone().unwrap_or_default();
            Some((handle, Buffer { name, binding: binding.binding, element, access }))
        })
        .collect()
}

/// Every entry point uses exactly the storage buffers its params struct declares, at the
/// bindings, element types and access the host binds them with (whatever the shader file
/// declares itself), and writes its output; every declared buffer is used by one of the
/// struct's entry points.
#[test]
fn every_entry_point_uses_the_buffers_the_host_binds() {
    check_modules(|shader, module, info, hosts, problems| {
        let file = shader.file();
        let buffers = wgsl_buffers(module);
        for (_, buffer) in &buffers {
            if !hosts.iter().any(|h| h.buffers.iter().any(|d| Buffer::from(d) == *buffer)) {
                problems.push(format!(
                    "shaders/{file} declares {buffer:?}, which no params struct of its own in params.rs \
                     declares: declare it there (kernel_params!), not in the file"
                ));
            }
        }
        let mut used_by_host: Vec<(&str, Buffer)> = Vec::new();
        for (index, entry) in module.entry_points.iter().enumerate() {
            // An entry point no params struct reads is the other test's failure.
            let Some(host) = hosts.iter().find(|h| h.entries.contains(&entry.name.as_str())) else {
                continue;
            };
            let uses = info.get_entry_point(index);
            let declared: Vec<Buffer> = host.buffers.iter().map(Buffer::from).collect();
            for (handle, buffer) in buffers.iter().filter(|(h, _)| !uses[*h].is_empty()) {
                if !declared.contains(buffer) {
                    problems.push(format!(
                        "shaders/{file}: entry point `{}` uses {buffer:?}, which the host does not bind \
                         for it: {} declares {declared:?}",
                        entry.name, host.name
                    ));
                }
                let written = uses[*handle].contains(naga::valid::GlobalUse::WRITE);
                if written != (buffer.access == Access::ReadWrite) {
                    problems.push(format!(
                        "shaders/{file}: entry point `{}` {} {}, declared {:?}",
                        entry.name,
                        if written { "writes" } else { "never writes" },
                        buffer.name,
                        buffer.access
                    ));
                }
                used_by_host.push((host.name, buffer.clone()));
            }
        }
        for host in hosts {
            for buffer in host.buffers.iter().map(Buffer::from) {
                if !used_by_host.iter().any(|(name, used)| *name == host.name && *used == buffer) {
                    problems.push(format!(
                        "{} declares {buffer:?}, which none of its entry points {:?} in shaders/{file} uses",
                        host.name, host.entries
                    ));
                }
            }
        }
    });
}

/// The u32 value of every WGSL `const` whose name starts with `prefix`.
fn wgsl_codes(module: &naga::Module, prefix: &str) -> BTreeSet<(String, u32)> {
    module
        .constants
        .iter()
        .filter_map(|(_, c)| {
            let name = c.name.as_deref()?;
            if !name.starts_with(prefix) {
                return None;
            }
            let value = match module.global_expressions[c.init] {
                naga::Expression::Literal(naga::Literal::U32(v)) => v,
                ref other => panic!("{name} is not a u32 literal: {other:?}"),
            };
            Some((name.to_string(), value))
        })
        .collect()
}

#[test]
fn op_codes_match_the_wgsl_constants() {
    let codes = [
        (FusedActivation::SHADER, FusedActivation::WGSL_PREFIX, FusedActivation::WGSL),
        (UnaryOp::SHADER, UnaryOp::WGSL_PREFIX, UnaryOp::WGSL),
        (BinaryOp::SHADER, BinaryOp::WGSL_PREFIX, BinaryOp::WGSL),
    ];
    for (shader, prefix, host) in codes {
        let (module, _) = reflect(shader);
        let host: BTreeSet<(String, u32)> = host.iter().map(|&(n, v)| (n.to_string(), v)).collect();
        assert_eq!(
            host,
            wgsl_codes(&module, prefix),
            "{prefix}* codes: the host's, then shaders/{}'s",
            shader.file()
        );
    }
}

/// Every shader compiles as wgpu compiles it, prelude included, without a GPU.
#[test]
fn every_shader_parses_and_validates_with_the_prelude() {
    for shader in Shader::ALL {
        let (module, _) = reflect(shader);
        assert!(!module.entry_points.is_empty(), "shaders/{} has no entry point", shader.file());
    }
}
