//! Dropping what a persist call is done with on a thread of its own.
//!
//! # Why
//! A batch's groups (40,000 in the service's default batch) hold a few hundred thousand small
//! allocations, made on the thread that grouped them. Freeing them on the writer took
//! 5–10 ms per batch (measured with `iomt-runtime`'s `benches/service.rs`), time in which
//! the batch's caller waits and nothing else of the pipeline moves on that core.
//!
//! # What must hold
//! * Bounded: at most one value waits while one is being dropped; a further
//!   [`DeferredDrop::drop_later`] waits its turn, so memory cannot pile up behind a slow drop.
//! * Dropping the [`DeferredDrop`] drops whatever waits and joins the thread.
//! * When the thread cannot be started, or has ended (a panic in a value's drop), values are
//!   dropped by the caller: nothing leaks.

use std::any::Any;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

type Garbage = Box<dyn Any + Send>;

/// A thread that drops what it is given (see the module docs).
#[derive(Debug)]
pub(crate) struct DeferredDrop {
    sender: Option<SyncSender<Garbage>>,
    thread: Option<JoinHandle<()>>,
}

impl DeferredDrop {
    /// Starts the thread, named `name`; if it cannot start, values are dropped by the caller.
    pub(crate) fn start(name: &str) -> DeferredDrop {
        let (sender, received) = sync_channel::<Garbage>(1);
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                for garbage in received {
                    drop(garbage);
                }
            });
        match spawned {
            Ok(thread) => DeferredDrop {
                sender: Some(sender),
                thread: Some(thread),
            },
            Err(_) => DeferredDrop {
                sender: None,
                thread: None,
            },
        }
    }

    /// Drops `value` on the thread (or here, when the thread is gone).
    pub(crate) fn drop_later<T: Send + 'static>(&self, value: T) {
        match &self.sender {
            Some(sender) => {
                if let Err(unsent) = sender.send(Box::new(value)) {
                    drop(unsent.0);
                }
            }
            None => drop(value),
        }
    }
}

impl Drop for DeferredDrop {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has dropped what waits.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            // A panic in a value's drop has ended the thread already; there is nothing to add.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops, and the threads they happened on.
    struct Counted {
        drops: Arc<AtomicUsize>,
        off_thread: Arc<AtomicUsize>,
        sender_thread: std::thread::ThreadId,
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
            if std::thread::current().id() != self.sender_thread {
                self.off_thread.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn every_value_is_dropped_off_the_caller_by_the_time_it_is_dropped() {
        let drops = Arc::new(AtomicUsize::new(0));
        let off_thread = Arc::new(AtomicUsize::new(0));
        let deferred = DeferredDrop::start("test-drop");
        for _ in 0..10 {
            deferred.drop_later(vec![Counted {
                drops: drops.clone(),
                off_thread: off_thread.clone(),
                sender_thread: std::thread::current().id(),
            }]);
        }
        drop(deferred);
        assert_eq!(drops.load(Ordering::SeqCst), 10);
        assert_eq!(off_thread.load(Ordering::SeqCst), 10);
    }

    struct Panics;

    impl Drop for Panics {
        fn drop(&mut self) {
            panic!("a drop that panics");
        }
    }

    #[test]
    fn after_a_panicking_drop_values_are_dropped_by_the_caller() {
        let deferred = DeferredDrop::start("test-drop");
        deferred.drop_later(Panics);
        // Wait for the thread to end.
        while !deferred
            .thread
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
        {
            std::thread::yield_now();
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let off_thread = Arc::new(AtomicUsize::new(0));
        deferred.drop_later(Counted {
            drops: drops.clone(),
            off_thread: off_thread.clone(),
            sender_thread: std::thread::current().id(),
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(off_thread.load(Ordering::SeqCst), 0);
        drop(deferred);
    }
}
