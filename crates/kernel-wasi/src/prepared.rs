//! Instantiation-ready code kept in memory, so a repeated run skips compilation and import resolution.

use std::collections::{HashMap, VecDeque};
use wasmagent_engine::{CacheSource, CodeTrust, CompiledCode, Metering};
use wasmagent_kernel::KernelError;
use wasmtime::InstancePre;
use wasmtime_wasi::p2::bindings::sync::CommandPre;

use crate::WasiKernel;
use crate::component_host::ComponentState;
use crate::host::ModuleState;

/// A module or component linked against this kernel's WASI and ready to instantiate.
#[derive(Clone)]
pub(crate) enum Prepared {
    Module(InstancePre<ModuleState<()>>),
    Component(CommandPre<ComponentState<()>>),
}

/// A bounded map from code digest to [`Prepared`]; the oldest entry goes first.
pub(crate) struct PreparedCache {
    entries: HashMap<String, Prepared>,
    order: VecDeque<String>,
    capacity: usize,
}

impl PreparedCache {
    pub(crate) fn new(capacity: usize) -> Self {
        PreparedCache { entries: HashMap::new(), order: VecDeque::new(), capacity }
    }

    fn get(&self, digest: &str) -> Option<Prepared> {
        self.entries.get(digest).cloned()
    }

    fn insert(&mut self, digest: String, prepared: Prepared) {
        if self.entries.contains_key(&digest) {
            return;
        }
        while self.order.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
        self.order.push_back(digest.clone());
        self.entries.insert(digest, prepared);
    }
}

impl WasiKernel {
    pub(crate) fn prepare(
        &self,
        bytes: &[u8],
        digest: &str,
        metering: Metering,
    ) -> Result<(Prepared, CacheSource), KernelError> {
        let key = format!("{digest}/{metering:?}");
        if let Some(prepared) = self.lock_prepared().get(&key) {
            return Ok((prepared, CacheSource::Memory));
        }
        let slot = metering.index();
        let on_compile = self.on_compile.as_deref().map(|f| f as &dyn Fn());
        // Linking happens inside `load`, so code refused here never reaches the disk cache.
        let (prepared, source) = self.engine.load(
            metering,
            bytes,
            digest,
            Some(&crate::instrument::FS_AUDIT),
            on_compile,
            CodeTrust::Guest,
            |code| self.link(code, slot),
        )?;
        self.lock_prepared().insert(key, prepared.clone());
        Ok((prepared, source))
    }

    /// Links `code` against this kernel's WASI for the engine in `slot`; refuses code that is not a command.
    fn link(&self, code: &CompiledCode, slot: usize) -> Result<Prepared, KernelError> {
        match code {
            CompiledCode::Module(module) => {
                if module.get_export("_start").is_none() {
                    return Err(KernelError::InvalidCode(
                        "the module exports no `_start` function: only WASI command modules can be run".into(),
                    ));
                }
                let pre = self.module_linkers[slot]
                    .instantiate_pre(module)
                    .map_err(|e| KernelError::InvalidCode(format!("cannot link the module: {e:#}")))?;
                Ok(Prepared::Module(pre))
            }
            CompiledCode::Component(component) => {
                let pre =
                    self.component_linkers[slot].instantiate_pre(component).and_then(CommandPre::new).map_err(|e| {
                        KernelError::InvalidCode(format!(
                            "cannot link the component (only wasi:cli/command components can be run): {e:#}"
                        ))
                    })?;
                Ok(Prepared::Component(pre))
            }
        }
    }

    fn lock_prepared(&self) -> std::sync::MutexGuard<'_, PreparedCache> {
        // The cache holds only ready-made values; a panic while holding the lock cannot leave it half-updated.
        self.prepared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
