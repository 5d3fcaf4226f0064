//! Where each member stands for a batch's gate: converged, pending, failed
//! or absent as its reports say, with what the step's `wait` asks of its
//! health on top — and, for messages, why a member holds a batch.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use super::batches::{GateCounts, Ranked};
use super::state::{Direction, RolloutState};
use crate::clock::{age_seconds, format_age, parse_rfc3339, HumanDuration};
use crate::fleet::{Fleet, Member, MemberState};
use crate::health::one_line;

/// What a forward batch's gate asks of a member's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthGate {
    /// Healthy without a break at least this long (by the node's clock).
    pub min_healthy: Duration,
    /// The batch has waited past `healthy_deadline`: a member not healthy
    /// yet counts as failed.
    pub deadline_passed: bool,
}

impl HealthGate {
    /// The health gate of the rollout's latest batch, if its step asks for
    /// health. Only releases are gated on health: a rollback takes nodes
    /// back to a state they ran before and is gated on their runs.
    pub fn of(state: &RolloutState, now: SystemTime) -> Option<HealthGate> {
        if state.direction != Direction::Forward || !state.wait.wants_health() {
            return None;
        }
        let waited = state
            .moved_at
            .as_deref()
            .and_then(|t| parse_rfc3339(t).ok())
            .map(|t| age_seconds(t, now));
        Some(HealthGate {
            min_healthy: state.wait.min_healthy.map_or(Duration::ZERO, |d| d.0),
            deadline_passed: match (state.wait.healthy_deadline, waited) {
                (Some(deadline), Some(waited)) => waited >= deadline.0.as_secs().max(1),
                _ => false,
            },
        })
    }

    /// Whether a member that converged is healthy enough to count.
    pub fn ready(&self, member: &Member) -> bool {
        member
            .health
            .as_ref()
            .is_some_and(|h| h.healthy && h.healthy_for().is_some_and(|d| d >= self.min_healthy))
    }
}

/// Where a member stands for a batch's gate. Unlike the fleet view, a
/// failure counts only when it is a failure *at the generation computed for
/// the node now*: a node that failed on an earlier desired state (before
/// being taken back, say) has not tried this one yet, so it is pending. A
/// failure an operator's `resume` dealt with (`forgiven`) is pending too,
/// until the node reports again. With a health gate, a converged member
/// that is not healthy (long enough) is pending — failed once the batch
/// has waited past its `healthy_deadline`, unless forgiven.
pub fn gate_state(
    member: &Member,
    forgiven: &BTreeMap<String, String>,
    health: Option<&HealthGate>,
) -> MemberState {
    let is_forgiven =
        member.reported_at.is_some() && forgiven.get(&member.node) == member.reported_at.as_ref();
    match member.state {
        MemberState::Failed
            if member.observed_generation.as_deref() != Some(&member.desired_generation)
                || is_forgiven =>
        {
            MemberState::Pending
        }
        MemberState::Converged => match health {
            Some(g) if g.ready(member) => MemberState::Converged,
            Some(g) if g.deadline_passed && !is_forgiven => MemberState::Failed,
            Some(_) => MemberState::Pending,
            None => MemberState::Converged,
        },
        other => other,
    }
}

/// The members of one turn, by name, each with its gate state.
pub fn gate_states<'f>(
    fleet: &'f Fleet,
    state: &RolloutState,
    now: SystemTime,
) -> HashMap<&'f str, (MemberState, &'f Member)> {
    let health = HealthGate::of(state, now);
    fleet
        .members
        .iter()
        .map(|m| {
            (
                m.node.as_str(),
                (gate_state(m, &state.forgiven, health.as_ref()), m),
            )
        })
        .collect()
}

/// Counts the present members whose rank satisfies `watched`.
pub fn watched_counts(
    states: &HashMap<&str, (MemberState, &Member)>,
    order: &[Ranked],
    watched: impl Fn(f64) -> bool,
) -> GateCounts {
    let mut counts = GateCounts::default();
    for r in order.iter().filter(|r| watched(r.rank)) {
        let Some((state, _)) = states.get(r.node.as_str()) else {
            continue;
        };
        match state {
            MemberState::Absent => continue,
            MemberState::Converged => counts.converged += 1,
            MemberState::Failed => counts.failed += 1,
            MemberState::Pending => {}
        }
        counts.watched += 1;
    }
    counts
}

/// The watched members in `wanted` state, in rank order.
pub fn nodes_in<'f>(
    states: &HashMap<&str, (MemberState, &'f Member)>,
    order: &[Ranked],
    wanted: MemberState,
    watched: impl Fn(f64) -> bool,
) -> Vec<&'f Member> {
    order
        .iter()
        .filter(|r| watched(r.rank))
        .filter_map(|r| states.get(r.node.as_str()))
        .filter(|(state, _)| *state == wanted)
        .map(|(_, m)| *m)
        .collect()
}

/// Why a member holds (or failed) its batch, when its run is not the reason
/// but its health is: `unhealthy: port (cannot connect…) since 10:02:00Z`,
/// `healthy 20s of 5m`, `no health reported`.
pub fn health_reason(member: &Member, gate: &HealthGate) -> Option<String> {
    if member.state != MemberState::Converged || gate.ready(member) {
        return None;
    }
    Some(match &member.health {
        None => "converged, no health reported (is `convergent health` running on it?)".into(),
        Some(h) if !h.healthy => {
            let failing: Vec<String> = h
                .failing()
                .map(|c| format!("{} ({})", one_line(&c.name), one_line(&c.output)))
                .collect();
            format!(
                "unhealthy since {}: {}",
                one_line(h.unhealthy_since.as_deref().unwrap_or(&h.checked_at)),
                failing.join("; ")
            )
        }
        Some(h) => format!(
            "healthy for {} of the {} asked, since {}",
            format_age(h.healthy_for().unwrap_or_default().as_secs()),
            HumanDuration(gate.min_healthy),
            one_line(h.healthy_since.as_deref().unwrap_or("-"))
        ),
    })
}

/// Why a watched member holds its batch (or counts as failed), in words:
/// its health, its run, or the generation it has not reported yet.
pub fn hold_reason(
    state: MemberState,
    member: &Member,
    health: Option<&HealthGate>,
) -> Option<String> {
    if let Some(why) = health.and_then(|g| health_reason(member, g)) {
        return Some(why);
    }
    match state {
        MemberState::Converged | MemberState::Absent => None,
        MemberState::Failed => Some(format!(
            "its run failed{} at {}",
            member
                .message
                .as_deref()
                .map(|m| format!(" ({})", one_line(m)))
                .unwrap_or_default(),
            one_line(member.reported_at.as_deref().unwrap_or("-"))
        )),
        MemberState::Pending => Some(match (&member.observed_generation, &member.reported_at) {
            (Some(g), Some(at)) if *g != member.desired_generation => format!(
                "has not reported generation {} yet (its last report, at {}, was for {})",
                member.desired_generation,
                one_line(at),
                one_line(g)
            ),
            (_, Some(at)) => format!(
                "its failure at {} was forgiven by a resume; waiting for its next report",
                one_line(at)
            ),
            _ => "has not reported yet".into(),
        }),
    }
}

/// The watched members that hold the latest batch, each with why, in
/// rank order.
pub fn held(
    states: &HashMap<&str, (MemberState, &Member)>,
    order: &[Ranked],
    watched: impl Fn(f64) -> bool,
    health: Option<&HealthGate>,
) -> Vec<String> {
    order
        .iter()
        .filter(|r| watched(r.rank))
        .filter_map(|r| states.get(r.node.as_str()))
        .filter(|(state, _)| matches!(state, MemberState::Pending | MemberState::Failed))
        .filter_map(|(state, m)| {
            hold_reason(*state, m, health).map(|why| format!("{}: {why}", m.node))
        })
        .collect()
}

/// Node names, for messages; with a health gate, each held for its health
/// says why.
pub fn names(members: &[&Member], health: Option<&HealthGate>) -> String {
    let names: Vec<String> = members
        .iter()
        .map(|m| match health.and_then(|g| health_reason(m, g)) {
            Some(why) => format!("{} ({why})", m.node),
            None => m.node.clone(),
        })
        .collect();
    short_list(&names, ", ")
}

/// Names joined by `separator`, the first 20 only when there are more (a
/// batch of a big fleet has thousands): for logs and histories.
pub fn short_list(names: &[String], separator: &str) -> String {
    const SHOWN: usize = 20;
    if names.len() > SHOWN {
        format!(
            "{}{separator}… ({} in all)",
            names[..SHOWN].join(separator),
            names.len()
        )
    } else {
        names.join(separator)
    }
}

/// The reason to pause when the latest batch has waited past the step's
/// timeout.
pub fn timed_out(
    state: &RolloutState,
    states: &HashMap<&str, (MemberState, &Member)>,
    order: &[Ranked],
    watched: impl Fn(f64) -> bool,
    now: SystemTime,
) -> Option<String> {
    let timeout = state.wait.timeout?.0;
    let moved = parse_rfc3339(state.moved_at.as_deref()?).ok()?;
    let waited = age_seconds(moved, now);
    if waited < timeout.as_secs().max(1) {
        return None;
    }
    let pending = nodes_in(states, order, MemberState::Pending, watched);
    Some(format!(
        "batch {} did not converge within {} ({} still pending: {})",
        state.batches,
        HumanDuration(timeout),
        pending.len(),
        names(&pending, HealthGate::of(state, now).as_ref())
    ))
}
