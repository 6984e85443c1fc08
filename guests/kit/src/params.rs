//! Parameter lookup: the values the operator set, else the defaults the guest declares.

use crate::types::{GuestError, Param, ParamKind, ParamSpec, ParamValue};

/// Declared parameters plus the values set for one call.
pub struct Params<'a> {
    specs: &'a [ParamSpec],
    set: &'a [Param],
}

impl<'a> Params<'a> {
    /// Fails on a parameter the guest does not declare or of the wrong kind.
    pub fn new(specs: &'a [ParamSpec], set: &'a [Param]) -> Result<Self, GuestError> {
        for p in set {
            let spec = specs
                .iter()
                .find(|s| s.name == p.name)
                .ok_or_else(|| GuestError::InvalidParam(format!("unknown parameter `{}`", p.name)))?;
            let kind_ok = matches!(
                (&spec.kind, &p.value),
                (ParamKind::Float, ParamValue::Float(_) | ParamValue::Int(_))
                    | (ParamKind::Int, ParamValue::Int(_))
                    | (ParamKind::Bool, ParamValue::Bool(_))
                    | (ParamKind::Text, ParamValue::Text(_))
            );
            if !kind_ok {
                return Err(GuestError::InvalidParam(format!("parameter `{}` has the wrong type", p.name)));
            }
        }
        Ok(Params { specs, set })
    }

    fn value(&self, name: &str) -> &ParamValue {
        self.set
            .iter()
            .rev()
            .find(|p| p.name == name)
            .map(|p| &p.value)
            .or_else(|| self.specs.iter().find(|s| s.name == name).map(|s| &s.default))
            .unwrap_or_else(|| panic!("guest asked for undeclared parameter `{name}`"))
    }

    pub fn float(&self, name: &str) -> f64 {
        match self.value(name) {
            ParamValue::Float(v) => *v,
            ParamValue::Int(v) => *v as f64,
            _ => unreachable!("kinds checked in Params::new"),
        }
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.value(name) {
            ParamValue::Int(v) => *v,
            _ => unreachable!("kinds checked in Params::new"),
        }
    }

    pub fn text(&self, name: &str) -> &str {
        match self.value(name) {
            ParamValue::Text(v) => v,
            _ => unreachable!("kinds checked in Params::new"),
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        match self.value(name) {
            ParamValue::Bool(v) => *v,
            _ => unreachable!("kinds checked in Params::new"),
        }
    }
}

/// A float parameter's declaration.
pub fn float(name: &str, default: f64, help: &str) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        kind: ParamKind::Float,
        default: ParamValue::Float(default),
        help: help.into(),
    }
}

/// An integer parameter's declaration.
pub fn int(name: &str, default: i64, help: &str) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        kind: ParamKind::Int,
        default: ParamValue::Int(default),
        help: help.into(),
    }
}

/// A text parameter's declaration.
pub fn text(name: &str, default: &str, help: &str) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        kind: ParamKind::Text,
        default: ParamValue::Text(default.into()),
        help: help.into(),
    }
}
