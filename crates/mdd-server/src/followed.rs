//! State that both this server and the store's followers change: tokens and silences. A
//! request here edits memory at once, after its write to the store, so its own next request
//! sees it; `follow` reloads the whole set from the store when another server moved it.
//!
//! Those two meet: a reload whose read began before a change made here and whose answer
//! lands after it would put the old set back (a silence just ended shown again, a token just
//! revoked let in again) until the next reload. So every change made here is counted, and a
//! reload is taken only if none was made since its read began; one refused is read again.
//! Owns nothing but that count beside the value; never touches the store itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A value loaded from the store and also changed in place by this server.
pub struct Followed<T> {
    value: RwLock<T>,
    /// Changes made here since the start, counted under the write lock.
    local_changes: AtomicU64,
}

impl<T> Followed<T> {
    pub fn new(value: T) -> Self {
        Self {
            value: RwLock::new(value),
            local_changes: AtomicU64::new(0),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|p| p.into_inner())
    }

    /// For a change this server makes itself, after writing it to the store.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        let guard = self.value.write().unwrap_or_else(|p| p.into_inner());
        // Counted while the lock is held: a reload that checks the count under the same lock
        // either lands before this change (which then applies on top) or sees it counted.
        self.local_changes.fetch_add(1, Ordering::SeqCst);
        guard
    }

    /// How many changes were made here so far: read it before reading the store to reload.
    pub fn changes(&self) -> u64 {
        self.local_changes.load(Ordering::SeqCst)
    }

    /// Puts in what the store held, read after `changes` returned `since`, merged by `take`;
    /// false (and nothing changed) if a change was made here meanwhile, which the read may
    /// not hold.
    pub fn reload(&self, since: u64, take: impl FnOnce(&mut T)) -> bool {
        let mut guard = self.value.write().unwrap_or_else(|p| p.into_inner());
        if self.local_changes.load(Ordering::SeqCst) != since {
            return false;
        }
        take(&mut guard);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_read_before_a_change_here_does_not_undo_it() {
        let silences = Followed::new(vec!["maintenance"]);
        // A reload begins: it notes the count and reads the store, which still holds it.
        let since = silences.changes();
        let read = vec!["maintenance"];
        // Meanwhile a request here ends the silence, in the store and in memory.
        silences.write().retain(|s| *s != "maintenance");
        // The reload's answer lands: it is refused, so the ended silence stays ended.
        assert!(!silences.reload(since, |v| *v = read));
        assert!(silences.read().is_empty());
        // Read again, it holds the change and is taken.
        let since = silences.changes();
        assert!(silences.reload(since, |v| *v = vec!["other server's"]));
        assert_eq!(*silences.read(), vec!["other server's"]);
    }

    #[test]
    fn a_change_after_a_reload_landed_applies_on_top_of_it() {
        let tokens = Followed::new(vec![1]);
        let since = tokens.changes();
        assert!(tokens.reload(since, |v| *v = vec![1, 2]));
        tokens.write().retain(|t| *t != 2);
        assert_eq!(*tokens.read(), vec![1]);
        assert_ne!(tokens.changes(), since, "the change is counted");
    }
}
