//! A mutex that serves its waiters in the order they came (a ticket lock
//! over [`std::sync::Mutex`]), for the composer's state.
//!
//! The standard mutex lets a thread that unlocks take the lock straight
//! back while the thread it woke is still getting up. `GetCapacity` holds
//! the state for tens of milliseconds at 100,000 drives, and a provisioner
//! asks it back to back: a `CreateVolume` waited behind two or more of those
//! calls (102 ms measured, `benches/get_capacity.rs`). Here each `lock`
//! takes a ticket and waits for its turn, so a caller waits at most for
//! those that came before it.

use std::sync::{Condvar, Mutex, MutexGuard};

/// The ticket counters: `next` is the ticket the next caller takes,
/// `serving` the one that holds (or may take) the lock.
#[derive(Default)]
struct Turns {
    next: u64,
    serving: u64,
}

/// A mutex whose waiters take the lock first come, first served.
pub(crate) struct FairMutex<T> {
    turns: Mutex<Turns>,
    turn: Condvar,
    data: Mutex<T>,
}

/// The lock on a [`FairMutex`]: unlocked, and the next ticket served, when
/// dropped (a panic while it is held unlocks it as well).
pub(crate) struct FairGuard<'a, T> {
    owner: &'a FairMutex<T>,
    data: Option<MutexGuard<'a, T>>,
}

impl<T> FairMutex<T> {
    pub(crate) fn new(value: T) -> Self {
        FairMutex {
            turns: Mutex::new(Turns::default()),
            turn: Condvar::new(),
            data: Mutex::new(value),
        }
    }

    fn turns(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this caller's turn, after every caller already waiting.
    /// A panic of an earlier holder does not poison it: the state stays as
    /// the composer's own undo left it, as with the lock it replaces.
    pub(crate) fn lock(&self) -> FairGuard<'_, T> {
        let mut turns = self.turns();
        let ticket = turns.next;
        turns.next += 1;
        while turns.serving != ticket {
            turns = self.turn.wait(turns).unwrap_or_else(|e| e.into_inner());
        }
        drop(turns);
        // Only the holder of the serving ticket gets here: never contended.
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        FairGuard {
            owner: self,
            data: Some(data),
        }
    }

    /// Callers waiting for the lock (not counting its holder).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> u64 {
        let t = self.turns();
        (t.next - t.serving).saturating_sub(1)
    }
}

impl<T> std::ops::Deref for FairGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data.as_ref().expect("held until dropped")
    }
}

impl<T> std::ops::DerefMut for FairGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.data.as_mut().expect("held until dropped")
    }
}

impl<T> Drop for FairGuard<'_, T> {
    fn drop(&mut self) {
        // The data first: the next ticket's holder locks it at once.
        drop(self.data.take());
        self.owner.turns().serving += 1;
        self.owner.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Waits (without a deadline: the test runner's own timeout stops a
    /// hung test) until `n` callers wait for `m`.
    fn until_waiting<T>(m: &FairMutex<T>, n: u64) {
        while m.waiting() < n {
            std::thread::yield_now();
        }
    }

    /// The holder that unlocks and locks again at once (GetCapacity asked
    /// back to back) comes after the caller that was waiting: with the
    /// standard mutex it took the lock straight back.
    #[test]
    fn a_waiting_caller_goes_before_the_holder_locking_again() {
        let m = Arc::new(FairMutex::new(Vec::<&str>::new()));
        for _ in 0..20 {
            m.lock().clear();
            let held = m.lock();
            let waiter = {
                let m = m.clone();
                std::thread::spawn(move || m.lock().push("waiter"))
            };
            until_waiting(&m, 1);
            drop(held);
            m.lock().push("holder again");
            waiter.join().unwrap();
            assert_eq!(*m.lock(), ["waiter", "holder again"]);
        }
    }

    #[test]
    fn callers_are_served_in_the_order_they_came() {
        let m = Arc::new(FairMutex::new(Vec::<usize>::new()));
        let held = m.lock();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let m2 = m.clone();
                let t = std::thread::spawn(move || m2.lock().push(i));
                until_waiting(&m, i as u64 + 1);
                t
            })
            .collect();
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), [0, 1, 2, 3]);
    }

    #[test]
    fn a_panic_while_held_unlocks_it() {
        let m = Arc::new(FairMutex::new(0));
        let m2 = m.clone();
        let r = std::thread::spawn(move || {
            let _g = m2.lock();
            panic!("while holding the lock");
        })
        .join();
        assert!(r.is_err());
        *m.lock() += 1;
        assert_eq!(*m.lock(), 1);
    }
}
