//! The budget of records nobody waits for (refusals: step-ups, rate-limit hits, bad
//! credentials): at most so many per source and second, and so many in all, so that one client
//! cannot fill the disk or the journal with them. What is skipped is counted per source and
//! carried by the source's next record (`skipped-before:N`), or by a summary record when the log
//! closes; no refusal goes uncounted.
//!
//! Bounded itself: at most [`MAX_SOURCES`] sources are tracked in a second; past that, new sources
//! share one entry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Sources tracked at once; beyond it they share [`OVERFLOW`].
pub(crate) const MAX_SOURCES: usize = 10_000;
/// The entry sources share once [`MAX_SOURCES`] are tracked.
pub(crate) const OVERFLOW: &str = "*overflow*";

#[derive(Default)]
struct Entry {
    /// Records kept this second.
    kept: u32,
    /// Skipped since this source's last record.
    skipped: u64,
}

#[derive(Default)]
struct State {
    second: u64,
    kept: u32,
    sources: HashMap<String, Entry>,
}

/// Per-source and total records per second.
pub(crate) struct Budget {
    per_source: u32,
    total: u32,
    state: Mutex<State>,
}

impl Budget {
    pub(crate) fn new(per_source: u32, total: u32) -> Self {
        Self { per_source, total, state: Mutex::default() }
    }

    /// Whether `source` may have a record now: `Some(skipped)` with how many of its records were
    /// skipped since its last one, or `None` (skipped and counted).
    pub(crate) fn admit(&self, source: &str) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.second != now {
            s.second = now;
            s.kept = 0;
            // A new second: only sources with skips still owed stay.
            s.sources.retain(|_, e| {
                e.kept = 0;
                e.skipped > 0
            });
        }
        let total_spent = s.kept >= self.total;
        let key = if s.sources.contains_key(source) || s.sources.len() < MAX_SOURCES { source } else { OVERFLOW };
        let e = s.sources.entry(key.to_owned()).or_default();
        if total_spent || e.kept >= self.per_source {
            e.skipped += 1;
            return None;
        }
        e.kept += 1;
        let skipped = std::mem::take(&mut e.skipped);
        s.kept += 1;
        Some(skipped)
    }

    /// A record's place was refused after [`Budget::admit`] kept it (the log had no room): count
    /// it, and what it carried, as skipped again.
    pub(crate) fn unkeep(&self, source: &str, skipped: u64) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if s.sources.contains_key(source) { source } else { OVERFLOW };
        s.sources.entry(key.to_owned()).or_default().skipped += skipped + 1;
    }

    /// Every source with skips not yet carried by a record, and how many; forgotten here.
    pub(crate) fn take_owed(&self) -> Vec<(String, u64)> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.sources
            .iter_mut()
            .filter(|(_, e)| e.skipped > 0)
            .map(|(k, e)| (k.clone(), std::mem::take(&mut e.skipped)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_has_its_own_budget_and_the_next_record_carries_the_skips() {
        let b = Budget::new(3, 1000);
        assert_eq!((0..3).map(|_| b.admit("a")).collect::<Vec<_>>(), [Some(0); 3]);
        assert_eq!(b.admit("a"), None);
        assert_eq!(b.admit("a"), None);
        assert_eq!(b.admit("b"), Some(0), "another source is not held back by a");
        b.unkeep("b", 0);
        let owed = b.take_owed();
        assert_eq!(owed.len(), 2);
        assert!(owed.contains(&("a".to_owned(), 2)) && owed.contains(&("b".to_owned(), 1)), "{owed:?}");
        assert!(b.take_owed().is_empty(), "taken once");
    }

    #[test]
    fn the_total_holds_across_sources_and_the_table_is_bounded() {
        let b = Budget::new(u32::MAX, 5);
        let kept = (0..20).filter(|i| b.admit(&format!("s{i}")).is_some()).count();
        // (Unless the second turned meanwhile.)
        assert!((5..=10).contains(&kept), "{kept}");
        let b = Budget::new(1, u32::MAX);
        for i in 0..MAX_SOURCES + 100 {
            b.admit(&format!("s{i}"));
        }
        let n = b.state.lock().unwrap().sources.len();
        assert!(n <= MAX_SOURCES + 1, "{n}");
    }
}
