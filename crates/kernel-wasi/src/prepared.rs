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

/// Most bytes of compiled code [`PreparedCache`] keeps, all entries together: 256 MiB. Code larger than this is
/// linked for its run and not kept.
const MAX_PREPARED_BYTES: usize = 256 << 20;

/// A map from code digest to [`Prepared`], bounded by count and by the bytes of compiled code it holds
/// ([`MAX_PREPARED_BYTES`]); the oldest entry goes first.
pub(crate) struct PreparedCache {
    entries: HashMap<String, (Prepared, usize)>,
    order: VecDeque<String>,
    capacity: usize,
    bytes: usize,
}

impl PreparedCache {
    pub(crate) fn new(capacity: usize) -> Self {
        PreparedCache { entries: HashMap::new(), order: VecDeque::new(), capacity, bytes: 0 }
    }

    fn get(&self, digest: &str) -> Option<Prepared> {
        self.entries.get(digest).map(|(prepared, _)| prepared.clone())
    }

    /// Keeps `prepared`, whose compiled code takes `size` bytes, dropping the oldest entries to make room.
    fn insert(&mut self, digest: String, prepared: Prepared, size: usize) {
        if self.entries.contains_key(&digest) || size > MAX_PREPARED_BYTES {
            return;
        }
        while self.order.len() >= self.capacity || self.bytes + size > MAX_PREPARED_BYTES {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some((_, freed)) = self.entries.remove(&oldest) {
                self.bytes -= freed;
            }
        }
        self.order.push_back(digest.clone());
        self.entries.insert(digest, (prepared, size));
        self.bytes += size;
    }
}

/// Bytes of compiled code `code` holds in memory.
fn code_size(code: &CompiledCode) -> usize {
    let image = match code {
        CompiledCode::Module(module) => module.image_range(),
        CompiledCode::Component(component) => component.image_range(),
    };
    image.end.addr().saturating_sub(image.start.addr())
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
            |code| Ok((self.link(code, slot)?, code_size(code))),
        )?;
        let (prepared, size) = prepared;
        self.lock_prepared().insert(key, prepared.clone(), size);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared() -> Prepared {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, "(module (func (export \"_start\")))").unwrap();
        Prepared::Module(wasmtime::Linker::new(&engine).instantiate_pre(&module).unwrap())
    }

    #[test]
    fn kept_code_is_bounded_by_bytes_as_well_as_by_count() {
        let code = prepared();
        let mut cache = PreparedCache::new(4);
        cache.insert("a".into(), code.clone(), MAX_PREPARED_BYTES / 2);
        cache.insert("b".into(), code.clone(), MAX_PREPARED_BYTES / 4);
        cache.insert("c".into(), code.clone(), MAX_PREPARED_BYTES / 2);
        assert!(cache.get("a").is_none() && cache.get("b").is_some() && cache.get("c").is_some());
        assert!(cache.bytes <= MAX_PREPARED_BYTES, "{} bytes kept", cache.bytes);
        cache.insert("huge".into(), code.clone(), MAX_PREPARED_BYTES + 1);
        assert!(cache.get("huge").is_none() && cache.get("b").is_some(), "larger than the cap: not kept");
        for key in ["d", "e", "f", "g"] {
            cache.insert(key.into(), code.clone(), 1);
        }
        assert_eq!(cache.entries.len(), 4);
        assert!(cache.get("c").is_none() && cache.get("g").is_some());
    }
}
