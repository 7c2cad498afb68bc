//! Building numbered pieces of work on helper threads *and* the calling thread, and consuming
//! their results on the calling thread in order.
//!
//! # Why
//! A persist call builds Observations (CPU: merge, serialize, compress) and writes them
//! (SQLite's single writer, which must go in order). With one builder thread handing slices
//! to the writer, the slower of the two sets the pace and the other waits: measured with
//! `iomt-runtime`'s `benches/service.rs`, the builder was busy all the time and the writer
//! ~70%, and both stopped at every commit. Here the writer builds too whenever the next slice
//! is not ready, and builders keep going while the writer commits, up to [`run`]'s `ahead`
//! slices past the one being consumed, which bounds the memory built results take.
//!
//! # What must hold
//! * `consume` sees every index from 0 up, in order, each exactly once, on the calling
//!   thread; it stops at its first error, after which nothing more is built (a piece under
//!   way finishes and is dropped).
//! * At most `ahead` pieces past the next one to consume are built or being built.
//! * A panic in `build` on a helper thread reaches the caller (it is resumed there).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The shared state: results waiting to be consumed, and what is claimed.
struct State<T> {
    /// Built results by index, taken by the consumer.
    ready: Vec<Option<T>>,
    /// The next index nobody has claimed to build.
    next_unclaimed: usize,
    /// The next index to consume.
    next_to_consume: usize,
    /// Set when the consumer stopped (done, its error, or a panic): builders stop claiming.
    stopped: bool,
    /// Set when a builder thread panicked: the consumer stops waiting and resumes the panic.
    builder_panicked: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panicking builder never holds the lock while building; the state stays sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'g>(&self, guard: MutexGuard<'g, State<T>>) -> MutexGuard<'g, State<T>> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the next index to build, if it is within `ahead` of the consumer.
    fn claim(state: &mut State<T>, count: usize, ahead: usize) -> Option<usize> {
        let index = state.next_unclaimed;
        (!state.stopped && index < count && index <= state.next_to_consume + ahead).then(|| {
            state.next_unclaimed += 1;
            index
        })
    }

    /// Changes the state and wakes every waiting thread.
    fn update(&self, change: impl FnOnce(&mut State<T>)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Stops everything; from a builder thread that panicked, tells the consumer so.
    fn stop(&self, builder_panicked: bool) {
        self.update(|state| {
            state.stopped = true;
            state.builder_panicked |= builder_panicked;
        });
    }

    fn deliver(&self, index: usize, built: T) {
        self.update(|state| state.ready[index] = Some(built));
    }
}

/// Calls [`Shared::stop`] when dropped: at the end of a builder thread, or of the consumer's
/// loop, panics included, so no thread waits for one that is gone.
struct StopOnDrop<'s, T> {
    shared: &'s Shared<T>,
    builder: bool,
}

impl<T> Drop for StopOnDrop<'_, T> {
    fn drop(&mut self) {
        self.shared.stop(self.builder && std::thread::panicking());
    }
}

/// Builds pieces `0..count` with `build` on `helpers` threads and the calling thread, and
/// calls `consume` with each result on the calling thread, in index order. `ahead` (at least
/// 1) bounds how far building runs past consuming. Returns `consume`'s first error.
pub(crate) fn run<T, E>(
    count: usize,
    helpers: usize,
    ahead: usize,
    build: impl Fn(usize) -> T + Sync,
    mut consume: impl FnMut(usize, T) -> Result<(), E>,
) -> Result<(), E>
where
    T: Send,
{
    let ahead = ahead.max(1);
    if helpers == 0 || count < 2 {
        for index in 0..count {
            consume(index, build(index))?;
        }
        return Ok(());
    }
    let shared = Shared {
        state: Mutex::new(State {
            ready: (0..count).map(|_| None).collect(),
            next_unclaimed: 0,
            next_to_consume: 0,
            stopped: false,
            builder_panicked: false,
        }),
        changed: Condvar::new(),
    };
    std::thread::scope(|scope| {
        let (shared, build) = (&shared, &build);
        let threads: Vec<_> = (0..helpers.min(count))
            .map(|_| {
                scope.spawn(move || {
                    let _stop = StopOnDrop {
                        shared,
                        builder: true,
                    };
                    loop {
                        let mut state = shared.lock();
                        let index = loop {
                            if let Some(index) = Shared::claim(&mut state, count, ahead) {
                                break Some(index);
                            }
                            if state.stopped || state.next_unclaimed >= count {
                                break None;
                            }
                            state = shared.wait(state);
                        };
                        drop(state);
                        let Some(index) = index else { return };
                        shared.deliver(index, build(index));
                    }
                })
            })
            .collect();
        let stop = StopOnDrop {
            shared,
            builder: false,
        };
        let mut outcome = Ok(());
        for index in 0..count {
            let built = loop {
                let mut state = shared.lock();
                if let Some(built) = state.ready[index].take() {
                    break Some(built);
                }
                if state.builder_panicked {
                    break None; // joining below resumes the panic
                }
                // Not ready: build the next unclaimed piece here rather than wait (it may be
                // this one, when no helper took it yet).
                if let Some(claimed) = Shared::claim(&mut state, count, ahead) {
                    drop(state);
                    let built = build(claimed);
                    if claimed == index {
                        break Some(built);
                    }
                    shared.deliver(claimed, built);
                    continue;
                }
                drop(shared.wait(state));
            };
            let Some(built) = built else { break };
            if let Err(e) = consume(index, built) {
                outcome = Err(e);
                break;
            }
            shared.update(|state| state.next_to_consume = index + 1);
        }
        drop(stop);
        for thread in threads {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        outcome
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn results_come_in_order_once_each() {
        for helpers in 0..4 {
            for count in [0, 1, 2, 7, 100] {
                let mut seen = Vec::new();
                run::<_, ()>(
                    count,
                    helpers,
                    3,
                    |i| {
                        // Uneven work, so pieces finish out of order.
                        std::thread::sleep(std::time::Duration::from_micros((i % 3) as u64 * 200));
                        i * 10
                    },
                    |i, built| {
                        assert_eq!(built, i * 10);
                        seen.push(i);
                        Ok(())
                    },
                )
                .unwrap();
                assert_eq!(seen, (0..count).collect::<Vec<_>>(), "{helpers} helpers");
            }
        }
    }

    #[test]
    fn building_stays_within_ahead_of_consuming() {
        let consumed = AtomicUsize::new(0);
        let ahead = 2;
        run::<_, ()>(
            50,
            3,
            ahead,
            |i| {
                let next = consumed.load(Ordering::SeqCst);
                assert!(
                    i <= next + ahead,
                    "built {i} while {next} was next to consume"
                );
                i
            },
            |i, _| {
                std::thread::sleep(std::time::Duration::from_micros(300));
                consumed.store(i + 1, Ordering::SeqCst);
                Ok(())
            },
        )
        .unwrap();
    }

    #[test]
    fn the_first_error_stops_everything() {
        let built = AtomicUsize::new(0);
        let mut consumed = Vec::new();
        let outcome = run(
            1000,
            2,
            4,
            |i| {
                built.fetch_add(1, Ordering::SeqCst);
                i
            },
            |i, _| {
                consumed.push(i);
                if i == 5 { Err("stop") } else { Ok(()) }
            },
        );
        assert_eq!(outcome, Err("stop"));
        assert_eq!(consumed, (0..=5).collect::<Vec<_>>());
        // Index 5 was consumed, so at most 5 + 1 + ahead were claimed.
        assert!(built.load(Ordering::SeqCst) <= 5 + 1 + 4 + 1);
    }

    #[test]
    fn a_panic_anywhere_reaches_the_caller_without_hanging() {
        for helpers in [1, 3] {
            // Whichever thread builds piece 7 panics: a helper or the caller.
            let result = std::panic::catch_unwind(|| {
                run::<_, ()>(
                    40,
                    helpers,
                    2,
                    |i| {
                        assert!(i != 7, "piece 7 fails");
                        i
                    },
                    |_, _| Ok(()),
                )
            });
            assert!(result.is_err());
            // And a panic while consuming.
            let result = std::panic::catch_unwind(|| {
                run::<_, ()>(
                    40,
                    helpers,
                    2,
                    |i| i,
                    |i, _| {
                        assert!(i != 3, "consuming 3 fails");
                        Ok(())
                    },
                )
            });
            assert!(result.is_err());
        }
    }
}
