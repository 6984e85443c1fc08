//! The host↔WGSL ABI, checked by reflecting the shaders through naga (the WGSL front end
//! wgpu compiles them with): every params struct of `params.rs` against the WGSL struct of
//! the same name (field names, order, offsets, types, size), every entry point against the
//! struct it reads, and the op-code enums against the WGSL constants. Needs no GPU.

use std::collections::BTreeSet;

use wgpu::naga;

use super::kernels::Shader;
use super::params::*;

/// Every params struct of the host: (shader, WGSL struct name, entry points, size, fields).
struct HostParams {
    shader: Shader,
    name: &'static str,
    entries: &'static [&'static str],
    size: usize,
    fields: Vec<Field>,
}

fn host<P: KernelParams>() -> HostParams {
    let path = std::any::type_name::<P>();
    HostParams {
        shader: P::SHADER,
        name: path.rsplit("::").next().expect("a type name"),
        entries: P::ENTRIES,
        size: size_of::<P>(),
        fields: P::fields(),
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
        },
        HostParams {
            shader: Shader::Conv,
            name: "Broadcast",
            entries: &[],
            size: size_of::<Broadcast>(),
            fields: Broadcast::fields(),
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
