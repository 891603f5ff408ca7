use wasmtime::{ResourceLimiter, Result, format_err};

/// Enforces `memory_limit_bytes` over all linear memories of a store, and the engine's table-size limit.
///
/// A growth past the limit traps (rather than returning -1 to the guest) so the run ends with outcome
/// `memory_limit` and a denial naming the size that was asked for, instead of an allocator failure deep in guest
/// code. The peak is measured for `usage.memory_peak_bytes`.
#[derive(Debug)]
pub struct GuestLimiter {
    memory_limit: usize,
    table_limit: usize,
    memory_total: usize,
    memory_peak: usize,
    exceeded: Option<LimitExceeded>,
}

/// Which limit a guest ran into, with what it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    /// Total linear memory would have become `requested` bytes.
    Memory {
        /// Bytes the guest would have held after the growth.
        requested: usize,
        /// The limit in force.
        limit: usize,
    },
    /// One table would have held `requested` elements.
    Table {
        /// Elements the table would have held.
        requested: usize,
        /// The limit in force.
        limit: usize,
    },
}

impl GuestLimiter {
    pub(crate) fn new(memory_limit: usize, table_limit: usize) -> Self {
        GuestLimiter { memory_limit, table_limit, memory_total: 0, memory_peak: 0, exceeded: None }
    }

    /// Largest total linear memory held so far, in bytes.
    pub fn memory_peak(&self) -> usize {
        self.memory_peak
    }

    /// The limit the guest ran into, if any.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        self.exceeded
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        let total = self.memory_total.saturating_sub(current).saturating_add(desired);
        if total > self.memory_limit {
            self.exceeded = Some(LimitExceeded::Memory { requested: total, limit: self.memory_limit });
            return Err(format_err!(
                "memory limit exceeded: the guest asked for {total} bytes, the limit is {} bytes",
                self.memory_limit
            ));
        }
        self.memory_total = total;
        self.memory_peak = self.memory_peak.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool> {
        if desired > self.table_limit {
            self.exceeded = Some(LimitExceeded::Table { requested: desired, limit: self.table_limit });
            return Err(format_err!(
                "table limit exceeded: the guest asked for {desired} elements, the limit is {}",
                self.table_limit
            ));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        // A component instantiates a few dozen core instances at most; a module one.
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_all_memories_against_one_limit_and_tracks_the_peak() {
        let mut limiter = GuestLimiter::new(1000, 10);
        assert!(limiter.memory_growing(0, 600, None).unwrap());
        assert!(limiter.memory_growing(0, 300, None).unwrap());
        assert_eq!(limiter.memory_peak(), 900);
        assert!(limiter.memory_growing(300, 500, None).is_err());
        assert_eq!(limiter.exceeded(), Some(LimitExceeded::Memory { requested: 1100, limit: 1000 }));
    }

    #[test]
    fn table_growth_past_the_limit_is_refused() {
        let mut limiter = GuestLimiter::new(1000, 10);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(limiter.table_growing(10, 11, None).is_err());
        assert!(matches!(limiter.exceeded(), Some(LimitExceeded::Table { requested: 11, .. })));
    }
}
