//! Consumer groups of the new group protocol (KIP-848, `group.protocol=consumer`).
//!
//! The broker computes the assignment: each member heartbeats (ConsumerGroupHeartbeat)
//! with its subscription (topic names and/or a regular expression) and its member epoch;
//! the group keeps a group epoch, bumped whenever a subscription, the set of members or
//! the subscribed topics' partitions change, and a target assignment computed by a server
//! assignor ([`assign_uniform`], [`assign_range`], both sticky) for that epoch. Each member
//! then converges to its target as Kafka's `CurrentAssignmentBuilder` does ([`reconcile`]):
//! a partition moving between members is first revoked from its owner (state
//! UNREVOKED_PARTITIONS until the owner's heartbeat no longer lists it), and only then
//! given to its new member (UNRELEASED_PARTITIONS while it waits); a member that reached
//! its target is STABLE at the target's epoch.
//!
//! Membership lives in memory on the coordinating shard. Committed offsets persist through
//! the classic group store ([`super::GroupCoordinator`]); after a restart the members are
//! unknown (UNKNOWN_MEMBER_ID) and rejoin with epoch 0, keeping no partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::cluster::ClusterSnapshot;
use crate::protocol::errors::*;

/// FENCED_MEMBER_EPOCH: the member's epoch is not the one the coordinator knows.
pub const FENCED_MEMBER_EPOCH: i16 = 110;
/// UNRELEASED_INSTANCE_ID: a static member's instance id is still held by a live member.
pub const UNRELEASED_INSTANCE_ID: i16 = 111;
/// UNSUPPORTED_ASSIGNOR: the member asked for a server assignor the broker does not have.
pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
/// STALE_MEMBER_EPOCH: an offset commit or fetch carried an epoch that is not current.
pub const STALE_MEMBER_EPOCH: i16 = 113;
/// INVALID_REGULAR_EXPRESSION: the subscription's regular expression does not compile.
pub const INVALID_REGULAR_EXPRESSION: i16 = 128;

/// The member epoch of a member leaving the group.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member leaving for a while (it keeps its partitions until
/// its session times out or it rejoins with the same instance id).
pub const LEAVE_STATIC_EPOCH: i32 = -2;

/// The server assignors, the default first.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// Largest compiled size of a subscription's regular expression.
const REGEX_SIZE_MAX: usize = 1 << 20;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Kafka's `MemberState` of a consumer-group member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: BTreeSet<String>,
    pub subscribed_regex: Option<String>,
    pub assignor: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    pub last_seen: Instant,
    /// Set while the member must revoke partitions: it is removed if it has not by then.
    pub revoke_by: Option<Instant>,
}

impl Member {
    fn new(id: String) -> Member {
        Member {
            id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_names: BTreeSet::new(),
            subscribed_regex: None,
            assignor: None,
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            last_seen: Instant::now(),
            revoke_by: None,
        }
    }
}

/// One consumer group.
#[derive(Default)]
pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, Member>,
    /// Instance id → member id of static members.
    pub static_members: HashMap<String, String>,
    /// The target assignment of each member, for `assignment_epoch`.
    pub target: BTreeMap<String, Assignment>,
    /// The member that holds each partition (assigned or pending revocation).
    owners: HashMap<(Uuid, i32), String>,
    /// The subscribed topics that exist: name → (id, partitions).
    pub subscribed_topics: BTreeMap<String, (Uuid, usize)>,
    /// The snapshot version `subscribed_topics` was computed from.
    topics_version: Option<u64>,
    /// Compiled subscription expressions.
    regexes: HashMap<String, regex::Regex>,
    /// The assignor the latest target assignment was computed with.
    pub assignor: String,
}

/// What a heartbeat carries (ConsumerGroupHeartbeat v0-v1).
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: Option<Vec<String>>,
    pub subscribed_regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a heartbeat.
#[derive(Debug)]
pub struct HeartbeatResult {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's assignment, when it changed or the request was a full one.
    pub assignment: Option<Assignment>,
}

/// Limits and timeouts from the broker's configuration.
#[derive(Clone, Copy)]
pub struct Config {
    pub session_timeout: Duration,
    pub members_max: usize,
}

/// An error answered to a heartbeat: code and message.
pub type Error = (i16, String);

fn err(code: i16, message: impl Into<String>) -> Error {
    (code, message.into())
}

/// Checks a heartbeat's fields as Kafka does before anything else.
pub fn validate(hb: &Heartbeat) -> Result<(), Error> {
    if hb.instance_id.as_deref() == Some("") {
        return Err(err(INVALID_REQUEST, "InstanceId can't be empty."));
    }
    if hb.rack_id.as_deref() == Some("") {
        return Err(err(INVALID_REQUEST, "RackId can't be empty."));
    }
    match hb.member_epoch {
        e if e > 0 || e == LEAVE_EPOCH => {
            if hb.member_id.is_empty() {
                return Err(err(INVALID_REQUEST, "MemberId can't be empty."));
            }
        }
        0 => {
            if hb.rebalance_timeout_ms == -1 {
                return Err(err(
                    INVALID_REQUEST,
                    "RebalanceTimeoutMs must be provided in first request.",
                ));
            }
            if hb.owned.as_ref().is_none_or(|o| !o.is_empty()) {
                return Err(err(
                    INVALID_REQUEST,
                    "TopicPartitions must be empty when (re-)joining.",
                ));
            }
            let names = hb.subscribed_names.as_ref().is_some_and(|n| !n.is_empty());
            let regex = hb.subscribed_regex.as_ref().is_some_and(|r| !r.is_empty());
            if !names && !regex {
                return Err(err(
                    INVALID_REQUEST,
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                ));
            }
        }
        LEAVE_STATIC_EPOCH => {
            if hb.member_id.is_empty() {
                return Err(err(INVALID_REQUEST, "MemberId can't be empty."));
            }
            if hb.instance_id.is_none() {
                return Err(err(INVALID_REQUEST, "InstanceId can't be null."));
            }
        }
        _ => return Err(err(INVALID_REQUEST, "MemberEpoch is invalid.")),
    }
    if let Some(a) = &hb.assignor {
        if !ASSIGNORS.contains(&a.as_str()) {
            return Err(err(
                UNSUPPORTED_ASSIGNOR,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: {}.",
                    ASSIGNORS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Compiles a subscription expression for a full match, as Kafka (RE2/J `matches()`).
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_MAX)
        .build()
        .map_err(|e| {
            err(
                INVALID_REGULAR_EXPRESSION,
                format!("SubscribedTopicRegex `{pattern}` is not a valid regular expression: {e}"),
            )
        })
}

fn is_subset(owned: Option<&Assignment>, of: &Assignment) -> bool {
    let Some(owned) = owned else {
        return false;
    };
    owned.iter().all(|(topic, parts)| {
        parts.is_empty() || of.get(topic).is_some_and(|mine| parts.is_subset(mine))
    })
}

/// Whether the member still reports owning any of `revoked` (an unknown ownership counts
/// as owning).
fn owns_any(owned: Option<&Assignment>, revoked: &Assignment) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    owned.iter().any(|(topic, parts)| {
        revoked
            .get(topic)
            .is_some_and(|r| parts.iter().any(|p| r.contains(p)))
    })
}

fn check_epoch(member: &Member, received: i32, owned: Option<&Assignment>) -> Result<(), Error> {
    if received > member.epoch {
        return Err(err(
            FENCED_MEMBER_EPOCH,
            format!(
                "The consumer group member has a greater member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                member.epoch
            ),
        ));
    }
    if received < member.epoch
        && (received != member.previous_epoch || !is_subset(owned, &member.assigned))
    {
        return Err(err(
            FENCED_MEMBER_EPOCH,
            format!(
                "The consumer group member has a smaller member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                member.epoch
            ),
        ));
    }
    Ok(())
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            assignor: ASSIGNORS[0].to_string(),
            ..Default::default()
        }
    }

    /// Kafka's group states: Empty, Assigning, Reconciling, Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Handles one heartbeat: joins, leaves, subscription changes, the target assignment
    /// and the member's reconciliation.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        config: &Config,
        snapshot: &ClusterSnapshot,
        now: Instant,
    ) -> Result<HeartbeatResult, Error> {
        let owned = hb.owned.as_ref();
        if hb.member_epoch == LEAVE_EPOCH || hb.member_epoch == LEAVE_STATIC_EPOCH {
            return self.leave(&hb);
        }
        let joining = hb.member_epoch == 0;
        let mut member_id = hb.member_id.clone();
        if member_id.is_empty() {
            member_id = Uuid::new_v4().to_string();
        }
        if self.members.len() >= config.members_max && !self.members.contains_key(&member_id) {
            return Err(err(
                GROUP_MAX_SIZE_REACHED,
                format!(
                    "The consumer group has reached its maximum capacity of {} members.",
                    config.members_max
                ),
            ));
        }
        let mut bump = false;
        // Find (or create) the member.
        let before: Option<Member> = match &hb.instance_id {
            None => match self.members.get(&member_id) {
                Some(m) if joining => {
                    if m.epoch != 0 {
                        // A member that lost its state rejoins: it keeps no partitions.
                        self.release(&member_id);
                        let m = self.members.get_mut(&member_id).expect("present");
                        m.epoch = 0;
                        m.previous_epoch = 0;
                        m.state = MemberState::Stable;
                        m.revoke_by = None;
                    }
                    self.members.get(&member_id).cloned()
                }
                Some(m) => {
                    check_epoch(m, hb.member_epoch, owned)?;
                    Some(m.clone())
                }
                None if joining => None,
                None => {
                    return Err(err(
                        UNKNOWN_MEMBER_ID,
                        format!("Member {member_id} is not a member of group {}.", self.id),
                    ))
                }
            },
            Some(instance) => {
                let existing = self.static_members.get(instance).cloned();
                if joining {
                    match existing {
                        None => None,
                        Some(old_id) if old_id == member_id => {
                            self.release(&member_id);
                            let m = self.members.get_mut(&member_id).expect("present");
                            m.epoch = 0;
                            m.previous_epoch = 0;
                            m.state = MemberState::Stable;
                            self.members.get(&member_id).cloned()
                        }
                        Some(old_id) => {
                            let old = self.members.get(&old_id).expect("static member");
                            if old.epoch != LEAVE_STATIC_EPOCH {
                                return Err(err(
                                    UNRELEASED_INSTANCE_ID,
                                    format!(
                                        "Static member {old_id} with instance id {instance} cannot be replaced because it has not left the group."
                                    ),
                                ));
                            }
                            // Replaces the member that left: same partitions, new id.
                            let mut replaced = self.members.remove(&old_id).expect("present");
                            replaced.id = member_id.clone();
                            replaced.epoch = 0;
                            replaced.previous_epoch = 0;
                            if let Some(t) = self.target.remove(&old_id) {
                                self.target.insert(member_id.clone(), t);
                            }
                            for owner in self.owners.values_mut() {
                                if *owner == old_id {
                                    owner.clone_from(&member_id);
                                }
                            }
                            self.members.insert(member_id.clone(), replaced.clone());
                            self.static_members
                                .insert(instance.clone(), member_id.clone());
                            Some(replaced)
                        }
                    }
                } else {
                    let Some(old_id) = existing else {
                        return Err(err(
                            UNKNOWN_MEMBER_ID,
                            format!("Instance id {instance} is unknown."),
                        ));
                    };
                    if old_id != member_id {
                        return Err(err(
                            FENCED_INSTANCE_ID,
                            format!(
                                "Static member {member_id} with instance id {instance} is fenced by existing member {old_id}."
                            ),
                        ));
                    }
                    let m = self.members.get(&member_id).expect("static member");
                    check_epoch(m, hb.member_epoch, owned)?;
                    Some(m.clone())
                }
            }
        };
        let mut member = before.clone().unwrap_or_else(|| {
            bump = true;
            Member::new(member_id.clone())
        });
        // Update the member's subscription.
        if let Some(names) = &hb.subscribed_names {
            let names: BTreeSet<String> = names.iter().cloned().collect();
            if names != member.subscribed_names {
                member.subscribed_names = names;
                bump = true;
            }
        }
        if let Some(regex) = &hb.subscribed_regex {
            let regex = (!regex.is_empty()).then(|| regex.clone());
            if regex != member.subscribed_regex {
                if let Some(r) = &regex {
                    if !self.regexes.contains_key(r) {
                        let compiled = compile_regex(r)?;
                        self.regexes.insert(r.clone(), compiled);
                    }
                }
                member.subscribed_regex = regex;
                bump = true;
            }
        }
        if hb.assignor.is_some() && hb.assignor != member.assignor {
            member.assignor.clone_from(&hb.assignor);
            bump = true;
        }
        if hb.rebalance_timeout_ms != -1 {
            member.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        }
        if hb.rack_id.is_some() {
            member.rack_id.clone_from(&hb.rack_id);
        }
        member.instance_id.clone_from(&hb.instance_id);
        member.client_id = hb.client_id;
        member.client_host = hb.client_host;
        member.last_seen = now;
        if let Some(instance) = &member.instance_id {
            self.static_members
                .insert(instance.clone(), member.id.clone());
        }
        self.members.insert(member.id.clone(), member);
        if bump {
            self.forget_unused_regexes();
            self.topics_version = None;
        }
        if self.refresh_topics(snapshot) {
            bump = true;
        }
        if bump {
            self.epoch += 1;
        }
        if self.epoch > self.assignment_epoch {
            self.compute_target();
        }
        let mut member = self.members.remove(&member_id).expect("present");
        let assigned_before = member.assigned.clone();
        self.reconcile(&mut member, owned, now);
        let full = joining
            || (hb.rebalance_timeout_ms != -1 && hb.subscribed_names.is_some() && owned.is_some());
        let changed = before
            .as_ref()
            .is_none_or(|b| b.assigned != member.assigned)
            || assigned_before != member.assigned;
        let result = HeartbeatResult {
            member_id: member.id.clone(),
            member_epoch: member.epoch,
            assignment: (full || changed).then(|| member.assigned.clone()),
        };
        self.members.insert(member_id, member);
        Ok(result)
    }

    /// A member leaves (epoch -1), or a static member leaves for a while (epoch -2).
    fn leave(&mut self, hb: &Heartbeat) -> Result<HeartbeatResult, Error> {
        let id = match &hb.instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(id) if *id == hb.member_id => id.clone(),
                Some(id) => {
                    return Err(err(
                        FENCED_INSTANCE_ID,
                        format!("Instance id {instance} belongs to member {id}."),
                    ))
                }
                None => {
                    return Err(err(
                        UNKNOWN_MEMBER_ID,
                        format!("Instance id {instance} is unknown."),
                    ))
                }
            },
            None => hb.member_id.clone(),
        };
        if !self.members.contains_key(&id) {
            return Err(err(
                UNKNOWN_MEMBER_ID,
                format!("Member {id} is not a member of group {}.", self.id),
            ));
        }
        if hb.member_epoch == LEAVE_STATIC_EPOCH {
            // Keeps its partitions and its place in the target assignment until its
            // session times out or it rejoins with the same instance id.
            let m = self.members.get_mut(&id).expect("present");
            m.epoch = LEAVE_STATIC_EPOCH;
            m.revoke_by = None;
        } else {
            self.remove_member(&id);
        }
        Ok(HeartbeatResult {
            member_id: id,
            member_epoch: hb.member_epoch,
            assignment: None,
        })
    }

    /// Removes a member (left, session expired, fenced): its partitions are free at once,
    /// and the group epoch moves so that the others get them.
    pub fn remove_member(&mut self, id: &str) -> bool {
        let Some(member) = self.members.remove(id) else {
            return false;
        };
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        self.owners.retain(|_, owner| owner != id);
        self.target.remove(id);
        self.forget_unused_regexes();
        self.topics_version = None;
        self.epoch += 1;
        true
    }

    /// When the member must next be heard from (its session, or its revocation deadline).
    pub fn member_deadline(&self, id: &str, session: Duration) -> Option<Instant> {
        let m = self.members.get(id)?;
        let session_end = m.last_seen + session;
        Some(m.revoke_by.map_or(session_end, |r| r.min(session_end)))
    }

    /// Frees the partitions a member holds (it rejoins from nothing).
    fn release(&mut self, id: &str) {
        self.owners.retain(|_, owner| owner != id);
        if let Some(m) = self.members.get_mut(id) {
            m.assigned.clear();
            m.pending_revocation.clear();
        }
    }

    fn forget_unused_regexes(&mut self) {
        let used: BTreeSet<&String> = self
            .members
            .values()
            .filter_map(|m| m.subscribed_regex.as_ref())
            .collect();
        self.regexes.retain(|r, _| used.contains(r));
    }

    /// The topics a member subscribes to that exist.
    fn member_topics(
        &self,
        m: &Member,
        snapshot_topics: &BTreeMap<String, (Uuid, usize)>,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = m
            .subscribed_names
            .iter()
            .filter(|n| snapshot_topics.contains_key(*n))
            .cloned()
            .collect();
        if let Some(re) = m
            .subscribed_regex
            .as_ref()
            .and_then(|r| self.regexes.get(r))
        {
            out.extend(
                snapshot_topics
                    .keys()
                    .filter(|t| !t.starts_with("__") && re.is_match(t))
                    .cloned(),
            );
        }
        out
    }

    /// Recomputes the subscribed topics when the cluster's topics changed; true if they
    /// differ (a topic matching a regular expression was created, partitions were added,
    /// a topic was deleted).
    fn refresh_topics(&mut self, snapshot: &ClusterSnapshot) -> bool {
        if self.topics_version == Some(snapshot.version) {
            return false;
        }
        self.topics_version = Some(snapshot.version);
        let all: BTreeMap<String, (Uuid, usize)> = snapshot
            .topics
            .iter()
            .map(|(n, t)| (n.clone(), (t.id, t.partitions.len())))
            .collect();
        let mut subscribed = BTreeMap::new();
        for m in self.members.values() {
            for t in self.member_topics(m, &all) {
                let meta = all[&t];
                subscribed.insert(t, meta);
            }
        }
        if subscribed != self.subscribed_topics {
            self.subscribed_topics = subscribed;
            true
        } else {
            false
        }
    }

    /// The assignor of the group: the one most members ask for, else the default.
    fn choose_assignor(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.assignor {
                *counts.entry(a.as_str()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(a, _)| a.to_string())
            .unwrap_or_else(|| ASSIGNORS[0].to_string())
    }

    /// Computes the target assignment for the group epoch.
    fn compute_target(&mut self) {
        let subs: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), self.member_topics(m, &self.subscribed_topics)))
            .collect();
        self.assignor = self.choose_assignor();
        self.target = if self.assignor == "range" {
            assign_range(&subs, &self.subscribed_topics, &self.target)
        } else {
            assign_uniform(&subs, &self.subscribed_topics, &self.target)
        };
        self.assignment_epoch = self.epoch;
    }

    /// Kafka's `CurrentAssignmentBuilder`: moves the member towards its target.
    fn reconcile(&mut self, member: &mut Member, owned: Option<&Assignment>, now: Instant) {
        if member.epoch == LEAVE_STATIC_EPOCH {
            return;
        }
        let target = self.target.get(&member.id).cloned().unwrap_or_default();
        let next = match member.state {
            MemberState::Stable if member.epoch == self.assignment_epoch => None,
            MemberState::Stable | MemberState::UnreleasedPartitions => {
                Some(self.next_assignment(member, member.epoch, &target, owned))
            }
            MemberState::UnrevokedPartitions => {
                if owns_any(owned, &member.pending_revocation) {
                    None
                } else {
                    Some(self.next_assignment(member, member.epoch + 1, &target, owned))
                }
            }
        };
        if let Some((state, epoch, assigned, pending)) = next {
            if epoch != member.epoch {
                member.previous_epoch = member.epoch;
                member.epoch = epoch;
            }
            member.state = state;
            member.assigned = assigned;
            member.pending_revocation = pending;
            member.revoke_by = (state == MemberState::UnrevokedPartitions).then(|| {
                member.revoke_by.unwrap_or(
                    now + Duration::from_millis(member.rebalance_timeout_ms.max(0) as u64),
                )
            });
            self.owners.retain(|_, owner| *owner != member.id);
            for (topic, parts) in member.assigned.iter().chain(&member.pending_revocation) {
                for p in parts {
                    self.owners.insert((*topic, *p), member.id.clone());
                }
            }
        }
    }

    fn next_assignment(
        &self,
        member: &Member,
        epoch: i32,
        target: &Assignment,
        owned: Option<&Assignment>,
    ) -> (MemberState, i32, Assignment, Assignment) {
        let mut assigned = Assignment::new();
        let mut revoking = Assignment::new();
        let mut pending_assignment = Assignment::new();
        let mut unreleased = false;
        let topics: BTreeSet<&Uuid> = target.keys().chain(member.assigned.keys()).collect();
        let empty = BTreeSet::new();
        for topic in topics {
            let t = target.get(topic).unwrap_or(&empty);
            let current = member.assigned.get(topic).unwrap_or(&empty);
            let keep: BTreeSet<i32> = current.intersection(t).copied().collect();
            let revoke: BTreeSet<i32> = current.difference(&keep).copied().collect();
            let mut add: BTreeSet<i32> = t.difference(&keep).copied().collect();
            add.retain(|p| match self.owners.get(&(*topic, *p)) {
                Some(owner)
                    if *owner != member.id
                        || member
                            .pending_revocation
                            .get(topic)
                            .is_some_and(|r| r.contains(p)) =>
                {
                    unreleased = true;
                    false
                }
                _ => true,
            });
            if !keep.is_empty() {
                assigned.insert(*topic, keep);
            }
            if !revoke.is_empty() {
                revoking.insert(*topic, revoke);
            }
            if !add.is_empty() {
                pending_assignment.insert(*topic, add);
            }
        }
        if !revoking.is_empty() && owns_any(owned, &revoking) {
            (MemberState::UnrevokedPartitions, epoch, assigned, revoking)
        } else {
            for (topic, parts) in pending_assignment {
                assigned.entry(topic).or_default().extend(parts);
            }
            let state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            (state, self.assignment_epoch, assigned, Assignment::new())
        }
    }

    /// An offset commit (`fetch` false) or fetch by a member: NONE, or why not. Without a
    /// member id and epoch, a fetch is always allowed and a commit only while the group is
    /// empty (the admin client, or a consumer assigning partitions itself).
    pub fn check_member_epoch(&self, member_id: &str, epoch: i32, fetch: bool) -> i16 {
        if epoch < 0 && member_id.is_empty() {
            return if fetch || self.members.is_empty() {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            };
        }
        match self.members.get(member_id) {
            None => UNKNOWN_MEMBER_ID,
            Some(m) if m.epoch != epoch => STALE_MEMBER_EPOCH,
            Some(_) => NONE,
        }
    }
}

/// Kafka's uniform assignor, sticky: every partition of a subscribed topic goes to one
/// subscriber, the members' partition counts differ by at most one where subscriptions
/// allow, and a partition stays with its previous member unless balance needs it to move.
pub fn assign_uniform(
    subs: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, (Uuid, usize)>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let names: HashMap<Uuid, &str> = topics
        .iter()
        .map(|(n, (id, _))| (*id, n.as_str()))
        .collect();
    let mut out: BTreeMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut count: BTreeMap<String, usize> = subs.keys().map(|m| (m.clone(), 0)).collect();
    let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    let subscribed_anywhere: BTreeSet<&String> = subs.values().flatten().collect();
    // Keep what is still valid.
    for (member, assignment) in previous {
        let Some(mine) = subs.get(member) else {
            continue;
        };
        for (topic, parts) in assignment {
            let Some(name) = names.get(topic) else {
                continue;
            };
            if !mine.contains(*name) {
                continue;
            }
            let partitions = topics[*name].1 as i32;
            for &p in parts {
                if p < partitions && taken.insert((*topic, p)) {
                    out.get_mut(member)
                        .unwrap()
                        .entry(*topic)
                        .or_default()
                        .insert(p);
                    *count.get_mut(member).unwrap() += 1;
                }
            }
        }
    }
    // Give the rest to the least loaded subscriber.
    for (name, (id, partitions)) in topics {
        if !subscribed_anywhere.contains(name) {
            continue;
        }
        for p in 0..*partitions as i32 {
            if taken.contains(&(*id, p)) {
                continue;
            }
            let best = subs
                .iter()
                .filter(|(_, t)| t.contains(name))
                .min_by_key(|(m, _)| (count[*m], (*m).clone()))
                .map(|(m, _)| m.clone());
            if let Some(m) = best {
                taken.insert((*id, p));
                out.get_mut(&m).unwrap().entry(*id).or_default().insert(p);
                *count.get_mut(&m).unwrap() += 1;
            }
        }
    }
    // Balance: move partitions from the most to the least loaded member that can take one.
    let total: usize = count.values().sum();
    for _ in 0..total {
        let mut order: Vec<(usize, String)> = count.iter().map(|(m, c)| (*c, m.clone())).collect();
        order.sort();
        let mut moved = false;
        'find: for (low_count, low) in &order {
            for (high_count, high) in order.iter().rev() {
                if *high_count <= low_count + 1 {
                    break;
                }
                let candidate = out[high].iter().rev().find_map(|(topic, parts)| {
                    let name = names.get(topic)?;
                    if !subs[low].contains(*name) {
                        return None;
                    }
                    Some((*topic, *parts.iter().next_back()?))
                });
                if let Some((topic, p)) = candidate {
                    let from = out.get_mut(high).unwrap();
                    let parts = from.get_mut(&topic).unwrap();
                    parts.remove(&p);
                    if parts.is_empty() {
                        from.remove(&topic);
                    }
                    out.get_mut(low)
                        .unwrap()
                        .entry(topic)
                        .or_default()
                        .insert(p);
                    *count.get_mut(high).unwrap() -= 1;
                    *count.get_mut(low).unwrap() += 1;
                    moved = true;
                    break 'find;
                }
            }
        }
        if !moved {
            break;
        }
    }
    out
}

/// Kafka's range assignor, sticky: for each topic, its subscribers sorted by member id
/// get ranges of partitions (the first `partitions % members` one more); a member keeps
/// partitions it had as far as its share allows.
pub fn assign_range(
    subs: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, (Uuid, usize)>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (name, (id, partitions)) in topics {
        let members: Vec<&String> = subs
            .iter()
            .filter(|(_, t)| t.contains(name))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let n = members.len();
        let (base, extra) = (partitions / n, partitions % n);
        let quota: Vec<usize> = (0..n).map(|i| base + usize::from(i < extra)).collect();
        let mut given = vec![BTreeSet::new(); n];
        let mut taken = BTreeSet::new();
        for (i, m) in members.iter().enumerate() {
            if let Some(had) = previous.get(*m).and_then(|a| a.get(id)) {
                for &p in had {
                    if given[i].len() < quota[i] && (p as usize) < *partitions && taken.insert(p) {
                        given[i].insert(p);
                    }
                }
            }
        }
        let mut free = (0..*partitions as i32).filter(|p| !taken.contains(p));
        for (i, g) in given.iter_mut().enumerate() {
            while g.len() < quota[i] {
                match free.next() {
                    Some(p) => {
                        g.insert(p);
                    }
                    None => break,
                }
            }
        }
        for (i, g) in given.into_iter().enumerate() {
            if !g.is_empty() {
                out.get_mut(members[i]).unwrap().insert(*id, g);
            }
        }
    }
    out
}

/// The consumer groups a shard coordinates.
#[derive(Default)]
pub struct ConsumerGroups {
    pub groups: std::cell::RefCell<HashMap<String, ConsumerGroup>>,
    /// (group, member) pairs whose session a timer task is watching.
    pub watched: std::cell::RefCell<std::collections::HashSet<(String, String)>>,
}

impl ConsumerGroups {
    /// Whether a consumer group with members uses this id.
    pub fn has_members(&self, id: &str) -> bool {
        self.groups
            .borrow()
            .get(id)
            .is_some_and(|g| !g.members.is_empty())
    }

    pub fn exists(&self, id: &str) -> bool {
        self.groups.borrow().contains_key(id)
    }

    /// The verdict on an offset commit or fetch by `member_id` at `epoch`, if `id` is a
    /// consumer group (None: not one, the classic checks apply).
    pub fn check_member_epoch(
        &self,
        id: &str,
        member_id: &str,
        epoch: i32,
        fetch: bool,
    ) -> Option<i16> {
        self.groups
            .borrow()
            .get(id)
            .map(|g| g.check_member_epoch(member_id, epoch, fetch))
    }

    /// Removes an empty consumer group (DeleteGroups, or a classic group taking the id).
    /// False if it has members.
    pub fn remove_if_empty(&self, id: &str) -> bool {
        let mut groups = self.groups.borrow_mut();
        match groups.get(id) {
            Some(g) if !g.members.is_empty() => false,
            _ => {
                groups.remove(id);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[(&str, usize)]) -> BTreeMap<String, (Uuid, usize)> {
        list.iter()
            .map(|(n, p)| (n.to_string(), (Uuid::new_v4(), *p)))
            .collect()
    }

    fn subs(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        list.iter()
            .map(|(m, t)| (m.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn counts(a: &BTreeMap<String, Assignment>) -> Vec<usize> {
        a.values()
            .map(|x| x.values().map(|p| p.len()).sum())
            .collect()
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let t = topics(&[("a", 6)]);
        let one = assign_uniform(&subs(&[("m1", &["a"])]), &t, &BTreeMap::new());
        assert_eq!(counts(&one), vec![6]);
        let three = subs(&[("m1", &["a"]), ("m2", &["a"]), ("m3", &["a"])]);
        let next = assign_uniform(&three, &t, &one);
        assert_eq!(counts(&next), vec![2, 2, 2]);
        // m1 kept two of its partitions.
        let kept = &next["m1"];
        assert!(kept
            .values()
            .next()
            .unwrap()
            .is_subset(one["m1"].values().next().unwrap()));
        // Same input, same output.
        assert_eq!(assign_uniform(&three, &t, &next), next);
        // m2 leaves: only its partitions move.
        let two = subs(&[("m1", &["a"]), ("m3", &["a"])]);
        let after = assign_uniform(&two, &t, &next);
        assert_eq!(counts(&after), vec![3, 3]);
        for m in ["m1", "m3"] {
            let id = *t["a"].0.as_bytes();
            let before = &next[m][&Uuid::from_bytes(id)];
            assert!(before.is_subset(&after[m][&Uuid::from_bytes(id)]));
        }
    }

    #[test]
    fn uniform_spreads_single_partition_topics_range_does_not() {
        let t = topics(&[("a", 1), ("b", 1)]);
        let s = subs(&[("m1", &["a", "b"]), ("m2", &["a", "b"])]);
        assert_eq!(
            counts(&assign_uniform(&s, &t, &BTreeMap::new())),
            vec![1, 1]
        );
        assert_eq!(counts(&assign_range(&s, &t, &BTreeMap::new())), vec![2, 0]);
    }

    #[test]
    fn range_gives_ranges() {
        let t = topics(&[("a", 5)]);
        let s = subs(&[("m1", &["a"]), ("m2", &["a"])]);
        let out = assign_range(&s, &t, &BTreeMap::new());
        let id = t["a"].0;
        assert_eq!(out["m1"][&id], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["m2"][&id], BTreeSet::from([3, 4]));
    }

    fn snapshot(list: &[(&str, usize)], version: u64) -> ClusterSnapshot {
        let mut s = ClusterSnapshot {
            version,
            ..Default::default()
        };
        for (name, p) in list {
            let meta = crate::cluster::TopicMeta {
                name: name.to_string(),
                id: Uuid::from_u128(name.bytes().fold(1u128, |h, b| h * 31 + u128::from(b))),
                partitions: vec![crate::cluster::ShardId(0); *p],
                configs: Default::default(),
                replicas: vec![],
                leaders: vec![],
                isr: vec![],
                token: None,
            };
            s.topic_ids.insert(meta.id, meta.name.clone());
            s.topics.insert(name.to_string(), std::rc::Rc::new(meta));
        }
        s
    }

    fn join(id: &str, topics: &[&str]) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 30_000,
            subscribed_names: Some(topics.iter().map(|t| t.to_string()).collect()),
            subscribed_regex: None,
            assignor: None,
            owned: Some(Assignment::new()),
            client_id: String::new(),
            client_host: String::new(),
        }
    }

    fn beat(id: &str, epoch: i32, owned: Option<Assignment>) -> Heartbeat {
        Heartbeat {
            member_epoch: epoch,
            subscribed_names: None,
            rebalance_timeout_ms: -1,
            owned,
            ..join(id, &[])
        }
    }

    fn size(a: &Assignment) -> usize {
        a.values().map(|p| p.len()).sum()
    }

    #[test]
    fn partitions_are_revoked_before_they_move() {
        let cfg = Config {
            session_timeout: Duration::from_secs(45),
            members_max: 10,
        };
        let snap = snapshot(&[("t", 4)], 1);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let a = g.heartbeat(join("a", &["t"]), &cfg, &snap, now).unwrap();
        assert_eq!(a.member_epoch, 1);
        let a_parts = a.assignment.unwrap();
        assert_eq!(size(&a_parts), 4);
        // b joins: it gets nothing until a revoked.
        let b = g.heartbeat(join("b", &["t"]), &cfg, &snap, now).unwrap();
        assert_eq!(b.member_epoch, 2);
        assert_eq!(size(&b.assignment.unwrap()), 0);
        assert_eq!(g.members["b"].state, MemberState::UnreleasedPartitions);
        // a is asked to revoke two, stays at epoch 1.
        let a2 = g.heartbeat(beat("a", 1, None), &cfg, &snap, now).unwrap();
        assert_eq!(a2.member_epoch, 1);
        let kept = a2.assignment.unwrap();
        assert_eq!(size(&kept), 2);
        assert_eq!(g.members["a"].state, MemberState::UnrevokedPartitions);
        // Still reporting the old partitions: nothing changes.
        let a3 = g
            .heartbeat(beat("a", 1, Some(a_parts.clone())), &cfg, &snap, now)
            .unwrap();
        assert_eq!(a3.member_epoch, 1);
        let b2 = g.heartbeat(beat("b", 2, None), &cfg, &snap, now).unwrap();
        assert!(b2.assignment.is_none());
        // a acknowledges: epoch 2; b then gets the two.
        let a4 = g
            .heartbeat(beat("a", 1, Some(kept.clone())), &cfg, &snap, now)
            .unwrap();
        assert_eq!(a4.member_epoch, 2);
        let b3 = g.heartbeat(beat("b", 2, None), &cfg, &snap, now).unwrap();
        assert_eq!(size(&b3.assignment.unwrap()), 2);
        assert_eq!(g.state_name(), "Stable");
        // A stale epoch is fenced.
        let e = g
            .heartbeat(beat("a", 5, None), &cfg, &snap, now)
            .unwrap_err();
        assert_eq!(e.0, FENCED_MEMBER_EPOCH);
        // b leaves: a gets everything back.
        g.heartbeat(beat("b", LEAVE_EPOCH, None), &cfg, &snap, now)
            .unwrap();
        let a5 = g.heartbeat(beat("a", 2, None), &cfg, &snap, now).unwrap();
        assert_eq!(a5.member_epoch, 3);
        assert_eq!(size(&a5.assignment.unwrap()), 4);
    }

    #[test]
    fn static_member_rejoins_with_its_partitions() {
        let cfg = Config {
            session_timeout: Duration::from_secs(45),
            members_max: 10,
        };
        let snap = snapshot(&[("t", 2)], 1);
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let mut j = join("a", &["t"]);
        j.instance_id = Some("i1".into());
        let a = g.heartbeat(j, &cfg, &snap, now).unwrap();
        let parts = a.assignment.unwrap();
        // Another member cannot take the instance id while it is held.
        let mut other = join("x", &["t"]);
        other.instance_id = Some("i1".into());
        let e = g.heartbeat(other, &cfg, &snap, now).unwrap_err();
        assert_eq!(e.0, UNRELEASED_INSTANCE_ID);
        let mut leave = beat("a", LEAVE_STATIC_EPOCH, None);
        leave.instance_id = Some("i1".into());
        g.heartbeat(leave, &cfg, &snap, now).unwrap();
        let mut back = join("a2", &["t"]);
        back.instance_id = Some("i1".into());
        let a2 = g.heartbeat(back, &cfg, &snap, now).unwrap();
        assert_eq!(a2.assignment.unwrap(), parts);
        assert_eq!(g.epoch, 1, "a static member's return is not a rebalance");
    }

    #[test]
    fn regex_picks_up_new_topics() {
        let cfg = Config {
            session_timeout: Duration::from_secs(45),
            members_max: 10,
        };
        let now = Instant::now();
        let mut g = ConsumerGroup::new("g");
        let mut j = join("a", &[]);
        j.subscribed_names = Some(vec![]);
        j.subscribed_regex = Some("(^pre.*)".into());
        let a = g
            .heartbeat(j, &cfg, &snapshot(&[("pre1", 1), ("other", 1)], 1), now)
            .unwrap();
        assert_eq!(size(&a.assignment.unwrap()), 1);
        let a2 = g
            .heartbeat(
                beat("a", 1, None),
                &cfg,
                &snapshot(&[("pre1", 1), ("pre2", 2), ("other", 1)], 2),
                now,
            )
            .unwrap();
        assert_eq!(size(&a2.assignment.unwrap()), 3);
        let mut bad = join("b", &[]);
        bad.subscribed_regex = Some("(".into());
        assert_eq!(
            g.heartbeat(bad, &cfg, &snapshot(&[], 3), now)
                .unwrap_err()
                .0,
            INVALID_REGULAR_EXPRESSION
        );
    }
}
