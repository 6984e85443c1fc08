//! A loaded guest of either world: the session that calls it and the info it declared at
//! load. [`Detector`](crate::Detector) and [`Embedder`](crate::Embedder) are this type with
//! their world's bindings; what differs (`detect`, `embed`) lives in their modules.

use std::sync::Arc;

use super::contract::Violation;
use super::error::{GuestError, GuestFailure};
use super::session::{CallStats, Session, WorldBindings};
use super::wasi_nn::NnUsage;
use super::{GuestComponent, GuestRuntime, LoadError};

/// What a guest declares about itself at load, as the contract checks it.
pub trait DeclaredInfo {
    fn name(&self) -> &str;
    fn check(&self) -> Result<(), Violation>;
}

/// Implements [`DeclaredInfo`] for an info type with a `name` field, checked by `$check`.
macro_rules! declared_info {
    ($info:ty, $check:path) => {
        impl $crate::loaded::DeclaredInfo for $info {
            fn name(&self) -> &str {
                &self.name
            }

            fn check(&self) -> Result<(), $crate::contract::Violation> {
                $check(self)
            }
        }
    };
}
pub(crate) use declared_info;

/// A guest ready to run. Not `Sync`: give each worker its own (they share compiled code).
pub struct Loaded<B: WorldBindings, I> {
    pub(crate) session: Session<B>,
    info: I,
}

impl<B: WorldBindings, I: DeclaredInfo> Loaded<B, I> {
    /// Instantiates `component` and asks its info (`convert` makes it refacen's type); the
    /// guest is named after it from then on, and refused when the info breaks the contract.
    pub(crate) fn load(
        runtime: &GuestRuntime,
        component: Arc<GuestComponent>,
        convert: impl FnOnce(B::Info) -> I,
    ) -> Result<Self, LoadError> {
        let mut session = Session::new(runtime, component)?;
        let info = session
            .call_within("info", super::INFO_TIMEOUT, |bindings: &B, store| bindings.call_info(store))
            .map_err(|mut error| {
                if let GuestFailure::Timeout(limit) = error.failure {
                    error.failure = GuestFailure::InfoTimeout(limit);
                }
                error
            })?;
        let info = convert(info);
        session.name = info.name().to_string();
        let loaded = Loaded { session, info };
        loaded.info.check().map_err(|violation| {
            LoadError::Call(loaded.error("info", GuestFailure::InvalidAnswer(violation)))
        })?;
        Ok(loaded)
    }

    pub fn info(&self) -> &I {
        &self.info
    }

    pub fn component(&self) -> &Arc<GuestComponent> {
        &self.session.component
    }

    /// Timing of the last call.
    pub fn last_call(&self) -> CallStats {
        self.session.last_call
    }

    /// What the live instance holds in the host through wasi-nn (`None` before the first
    /// call and after a failed one, when there is no instance).
    pub fn nn_usage(&self) -> Option<NnUsage> {
        self.session.nn_usage()
    }

    /// `failure` in `call`, naming the guest and its file.
    pub(crate) fn error(&self, call: &'static str, failure: GuestFailure) -> GuestError {
        GuestError {
            guest: self.info.name().to_string(),
            file: self.session.component.path.display().to_string(),
            call,
            failure,
        }
    }
}
