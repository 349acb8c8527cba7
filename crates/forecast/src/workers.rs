//! The threads a batch of forecasts is evaluated on, and their claim on the CPU.
//!
//! Forecasting is batch work beside an online contour (inventory, fraud scoring) that must
//! not wait for it. Under `SCHED_IDLE` a thread runs only when no normal thread **of its
//! scheduling group** wants the core, and all of it on an otherwise idle machine, where an
//! idle-priority refresh is as fast as a normal one. Across groups (Linux autogroups: one per
//! session, and PostgreSQL gives every backend its own; or cgroups) the group's weight decides
//! — so in a process of its own forecasting also lowers its group (`forecast.group_nice`;
//! `docs/benchmarks.md`, isolation, has the measurements).

/// How a batch's evaluation claims the CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// The scheduler's normal policy, at the process's nice value.
    Normal,
    /// Linux `SCHED_IDLE`: run only when no normal thread wants the core. Elsewhere, and where
    /// the policy is refused (a seccomp filter), the threads run normally, with a warning.
    #[default]
    Idle,
}

/// The threads a batch is evaluated on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workers {
    /// How many (0: one per core).
    pub threads: usize,
    /// Their claim on the CPU.
    pub priority: Priority,
}

/// The name of every evaluation thread (`top -H`, `/proc/<pid>/task/*/comm`).
pub const THREAD_NAME: &str = "demand-model";

impl Workers {
    /// All cores, at the normal policy (a benchmark timing the model alone).
    pub const ALL_CORES: Self = Self { threads: 0, priority: Priority::Normal };

    /// Runs `work` over `items` split into one contiguous chunk per thread, on threads of
    /// this kind, and returns the results in order. A panicking chunk comes back empty (the
    /// caller, finding fewer results than items, treats the batch as failed).
    pub fn map<T: Sync, R: Send>(&self, items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = if self.threads == 0 { cores } else { self.threads }.min(items.len()).max(1);
        let chunk = items.len().div_ceil(threads).max(1);
        let (work, priority) = (&work, self.priority);
        std::thread::scope(|scope| {
            let parts: Vec<_> = items
                .chunks(chunk)
                .map(|part| {
                    std::thread::Builder::new()
                        .name(THREAD_NAME.into())
                        .spawn_scoped(scope, move || {
                            enter(priority);
                            part.iter().map(work).collect::<Vec<_>>()
                        })
                        .inspect_err(|e| tracing::warn!(error = %e, "starting a {THREAD_NAME} thread failed"))
                })
                .collect();
            parts.into_iter().flat_map(|p| p.ok().and_then(|handle| handle.join().ok()).unwrap_or_default()).collect()
        })
    }
}

/// Puts the calling thread under `priority` (once per thread: a thread under `SCHED_IDLE`
/// may not return to the normal policy without privileges, so only fresh threads enter it).
fn enter(priority: Priority) {
    if priority == Priority::Normal {
        return;
    }
    if let Err(e) = to_idle() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(error = %e, "demand model threads stay at the normal policy: SCHED_IDLE refused");
        });
    }
}

#[cfg(target_os = "linux")]
fn to_idle() -> Result<(), thread_priority::Error> {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let set =
        thread_priority::set_thread_priority_and_policy(thread_priority::thread_native_id(), ThreadPriority::Min, idle);
    // The crate sets the policy, then the thread's nice to 0 — which a niced process (`nice
    // -n 19`, systemd `Nice=`) may not do. The nice means nothing under SCHED_IDLE: what
    // counts is the policy.
    match set {
        Err(_) if thread_priority::thread_schedule_policy().is_ok_and(|p| p == idle) => Ok(()),
        other => other,
    }
}

#[cfg(not(target_os = "linux"))]
fn to_idle() -> Result<(), &'static str> {
    Err("SCHED_IDLE is Linux only")
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's name and scheduling policy (field 41 of its `/proc` `stat`: 5 is
    /// `SCHED_IDLE`, 0 `SCHED_OTHER`).
    fn me() -> (String, String) {
        let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields after the parenthesised command start at field 3.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        (comm.trim().to_owned(), after.split_whitespace().nth(41 - 3).unwrap_or("?").to_owned())
    }

    #[test]
    fn idle_workers_run_under_sched_idle_and_normal_ones_do_not() {
        let named = |policy: &str| (THREAD_NAME.to_owned(), policy.to_owned());
        let idle = Workers { threads: 2, priority: Priority::Idle }.map(&[0, 1], |_| me());
        assert_eq!(idle, [named("5"), named("5")], "SCHED_IDLE is 5");
        let normal = Workers { threads: 2, priority: Priority::Normal }.map(&[0, 1], |_| me());
        assert_eq!(normal, [named("0"), named("0")], "SCHED_OTHER is 0");
        assert_eq!(me().1, "0", "the caller keeps its policy: only the fresh workers were lowered");
    }

    #[test]
    fn results_come_back_in_order_on_any_number_of_threads() {
        let items: Vec<u32> = (0..101).collect();
        for threads in [0, 1, 3, 200] {
            let doubled = Workers { threads, priority: Priority::Idle }.map(&items, |i| i * 2);
            assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>(), "{threads} threads");
        }
        assert!(Workers::default().map(&[] as &[u32], |i| *i).is_empty());
    }

    #[test]
    fn a_panicking_item_loses_its_chunk_so_the_caller_sees_too_few_results() {
        let items: Vec<u32> = (0..8).collect();
        let results = Workers { threads: 4, priority: Priority::Normal }.map(&items, |i| {
            assert_ne!(*i, 5, "a bug in one forecast");
            *i
        });
        assert_eq!(results, [0, 1, 2, 3, 6, 7], "the chunk [4, 5] is gone, the others kept in order");
    }
}
