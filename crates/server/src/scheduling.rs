//! A forecast-only process's claim on the CPU against the main contour on a shared machine.
//!
//! Linux puts every session in an autogroup and shares the CPU group against group before
//! thread against thread. PostgreSQL starts every backend in a session of its own, so each is
//! a group; a process's nice and its threads' `SCHED_IDLE` only order it within its own group.
//! A refresh at the model threads' `SCHED_IDLE` therefore still took its fair share from
//! PostgreSQL and the broker, and inventory's desync p99 went ×5–×14 beside it; with the
//! forecast process's own group at nice 19, 1.11–1.50× (`docs/benchmarks.md`, isolation).
//! Under a service manager's CPU controller (systemd `CPUWeight=`, a container's cgroup)
//! autogroups do not apply and that controller's weight decides instead.

/// What became of lowering this process's scheduling group.
#[derive(Debug, PartialEq, Eq)]
pub enum GroupNice {
    /// The group is this process's own and runs at this nice now.
    Lowered(u8),
    /// The process does not lead its session: its group is shared with the processes that
    /// started it, which must not be slowed with it. Left alone.
    SharedSession,
    /// The kernel has no autogroups (or refused): left alone.
    Unavailable(String),
}

/// Sets this process's autogroup to `nice` when the group is its own (it leads its session).
pub async fn lower_own_group(nice: u8) -> GroupNice {
    match leads_own_session() {
        Ok(true) => {}
        Ok(false) => return GroupNice::SharedSession,
        Err(e) => return GroupNice::Unavailable(e),
    }
    // Without privileges the kernel takes one autogroup nice per 100 ms, machine-wide
    // (EAGAIN otherwise): instances starting together take turns.
    let mut attempts = 0;
    loop {
        match std::fs::write("/proc/self/autogroup", nice.to_string()) {
            Ok(()) => return GroupNice::Lowered(nice),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && attempts < 10 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(110)).await;
            }
            Err(e) => return GroupNice::Unavailable(format!("/proc/self/autogroup: {e}")),
        }
    }
}

/// Whether this process is its session's leader (`/proc/self/stat`'s session id is its pid).
fn leads_own_session() -> Result<bool, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    // After the parenthesised command: state, ppid, pgrp, session.
    let session = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(3))
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| "/proc/self/stat: no session id".to_owned())?;
    Ok(session == std::process::id())
}

/// Applies `forecast.group_nice` for a process about to run forecasting alone, and says so.
pub async fn apply_forecast_group_nice(nice: u8) {
    if nice == 0 {
        return;
    }
    match lower_own_group(nice).await {
        GroupNice::Lowered(n) => {
            // The kernel may have autogroups switched off (or a CPU cgroup in charge): the
            // nice is then recorded but decides nothing.
            let enabled =
                std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").is_ok_and(|v| v.trim() == "1");
            tracing::info!(
                nice = n,
                autogroups_enabled = enabled,
                "forecasting runs in its own scheduling group, lowered"
            );
        }
        GroupNice::SharedSession => tracing::warn!(
            "forecast.group_nice not applied: this process shares its session (and so its scheduling group) with \
             the processes that started it; start it as a service or with `setsid` to keep a refresh out of the \
             main contour's way"
        ),
        GroupNice::Unavailable(e) => tracing::warn!(error = %e, "forecast.group_nice not applied"),
    }
}
