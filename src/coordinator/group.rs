//! One consumer group: Kafka's classic group protocol as a state machine.
//!
//! ```text
//! Empty ──join──▶ PreparingRebalance ──all rejoined / rebalance timeout──▶ CompletingRebalance
//!   ▲                   ▲        ▲                                             │ leader's SyncGroup
//!   └── last member ────┘        └──── join, leave, expiry, sync timeout ──── Stable
//! ```
//!
//! Every transition is a synchronous method on [`Group`] (no `.await` while the state is
//! borrowed); callers that must wait for other members — JoinGroup until the rebalance
//! completes, SyncGroup until the leader's assignment arrives — wait on the coordinator's
//! [`Notify`], which every transition fires, with a timeout at the next deadline. Whichever
//! waiter sees a rebalance ready first completes it for everyone.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Committed;
use crate::protocol::errors::*;
use crate::util::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// The name Kafka's admin APIs use.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// Limits and timing of groups (broker flags).
#[derive(Clone, Copy, Debug)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    pub members_max: usize,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    /// Rejoined during the current rebalance.
    pub joined: bool,
    pub join_result: Option<JoinResult>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JoinResult {
    pub error_code: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: (member id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(code: i16, member_id: &str) -> JoinResult {
        JoinResult {
            error_code: code,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A group's membership as of one generation, as made durable (Kafka's GroupMetadata
/// record): written once a generation's assignment is in place, before any member is
/// given it, and when the group becomes Empty. A coordinator that takes the group over
/// starts from it, so members keep their generation and assignment across the move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMeta {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberMeta>,
}

/// One member of a [`GroupMeta`]: its metadata for the chosen protocol and its assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMeta {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    #[serde(with = "base64_bytes")]
    pub subscription: Bytes,
    #[serde(with = "base64_bytes")]
    pub assignment: Bytes,
}

/// Opaque protocol bytes as base64 strings in the JSON records.
mod base64_bytes {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// What a SyncGroup does next.
pub enum SyncStep {
    Done(Result<Bytes, i16>),
    /// Wait for the leader's assignment (poll with [`Group::poll_sync`]).
    Wait,
    /// The leader's assignment is in: make this membership durable, then report with
    /// [`Group::stored`]; every member waits until then.
    Store(GroupMeta),
}

/// A JoinGroup request, decoded.
#[derive(Clone, Debug)]
pub struct JoinArgs {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a member without an id is first given one and asked to rejoin with it.
    pub require_known_member_id: bool,
}

pub enum JoinStep {
    /// Answer now (an error, MEMBER_ID_REQUIRED, or a static member's unchanged assignment).
    Done(JoinResult),
    /// Wait for the rebalance; poll with this member id.
    Wait(String),
}

pub enum Poll<T> {
    Done(T),
    /// Nothing yet; look again when notified or at this deadline.
    Wait(Instant),
}

#[derive(Debug)]
pub struct Inner {
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined, and until when they
    /// stay reserved (the member's session timeout).
    pending: HashMap<String, Instant>,
    /// Static membership: instance id -> member id.
    pub instances: HashMap<String, String>,
    rebalance_deadline: Instant,
    initial_delay_until: Instant,
    /// When a CompletingRebalance gives up waiting for the leader's SyncGroup.
    sync_deadline: Instant,
    /// Wall-clock time the group last became Empty (its last member left); `None` if it
    /// never had members. Offsets of an empty group expire counting from here.
    pub empty_since_ms: Option<i64>,
    /// The leader's assignment is being made durable ([`SyncStep::Store`]).
    storing: bool,
}

pub struct Group {
    pub id: String,
    pub inner: RefCell<Inner>,
    pub offsets: RefCell<BTreeMap<(String, i32), Committed>>,
    /// Offsets committed inside open transactions (TxnOffsetCommit), per producer id: they
    /// become committed offsets when the transaction commits.
    pub txn_offsets: RefCell<BTreeMap<i64, crate::coordinator::OffsetMap>>,
    /// The membership last made durable (or loaded); a checkpoint restates it.
    pub stored: RefCell<Option<GroupMeta>>,
    changed: Rc<Notify>,
}

impl Group {
    pub fn new(id: String, changed: Rc<Notify>) -> Group {
        let now = Instant::now();
        Group {
            id,
            inner: RefCell::new(Inner {
                state: State::Empty,
                generation: 0,
                protocol_type: None,
                protocol_name: None,
                leader: None,
                members: BTreeMap::new(),
                pending: HashMap::new(),
                instances: HashMap::new(),
                rebalance_deadline: now,
                initial_delay_until: now,
                sync_deadline: now,
                empty_since_ms: None,
                storing: false,
            }),
            offsets: RefCell::new(BTreeMap::new()),
            txn_offsets: RefCell::new(BTreeMap::new()),
            stored: RefCell::new(None),
            changed,
        }
    }

    pub fn state(&self) -> State {
        self.inner.borrow().state
    }

    pub fn generation(&self) -> i32 {
        self.inner.borrow().generation
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Takes up a durable membership (a coordinator loading the group): Stable in its
    /// generation with its members and their assignments, or Empty. Each member's session
    /// counts from now, as Kafka's coordinator does on load.
    pub fn restore(&self, meta: GroupMeta, now_ms: i64) {
        let now = Instant::now();
        let mut g = self.inner.borrow_mut();
        g.generation = meta.generation;
        g.protocol_type = meta.protocol_type.clone();
        g.protocol_name = meta.protocol_name.clone();
        g.leader = meta.leader.clone();
        g.members.clear();
        g.instances.clear();
        let protocol = meta.protocol_name.clone().unwrap_or_default();
        for m in &meta.members {
            if let Some(instance) = &m.instance_id {
                g.instances.insert(instance.clone(), m.id.clone());
            }
            g.members.insert(
                m.id.clone(),
                Member {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: vec![(protocol.clone(), m.subscription.clone())],
                    assignment: m.assignment.clone(),
                    last_seen: now,
                    joined: false,
                    join_result: None,
                },
            );
        }
        if g.members.is_empty() {
            g.state = State::Empty;
            g.leader = None;
            g.protocol_name = None;
            g.empty_since_ms = Some(now_ms);
        } else {
            g.state = State::Stable;
        }
        drop(g);
        *self.stored.borrow_mut() = Some(meta);
    }

    /// The membership as it stands (what [`SyncStep::Store`] and [`Self::empty_to_store`]
    /// make durable).
    fn meta(g: &Inner) -> GroupMeta {
        let protocol = g.protocol_name.clone().unwrap_or_default();
        GroupMeta {
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol_name.clone(),
            leader: g.leader.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberMeta {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    subscription: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The Empty membership to make durable, if the group became Empty since its last
    /// durable membership (which a new coordinator would otherwise take up, with members
    /// long gone).
    pub fn empty_to_store(&self) -> Option<GroupMeta> {
        let g = self.inner.borrow();
        if g.state != State::Empty {
            return None;
        }
        let stored = self.stored.borrow();
        let stale = stored
            .as_ref()
            .is_some_and(|s| s.generation != g.generation || !s.members.is_empty());
        stale.then(|| Self::meta(&g))
    }

    /// `meta` (of this group's generation `meta.generation`) was made durable (`Ok`) or
    /// not (the error code): a stored assignment makes the group Stable and is given to
    /// the members; one that could not be stored starts the rebalance over.
    pub fn stored(&self, meta: GroupMeta, result: Result<(), i16>) {
        let now = Instant::now();
        let mut g = self.inner.borrow_mut();
        let current = g.generation == meta.generation;
        if current && g.state == State::CompletingRebalance && g.storing {
            g.storing = false;
            match result {
                Ok(()) => {
                    g.state = State::Stable;
                    for member in g.members.values_mut() {
                        member.last_seen = now;
                    }
                }
                Err(_) => {
                    for member in g.members.values_mut() {
                        member.assignment = Bytes::new();
                    }
                    start_rebalance(&mut g, now);
                }
            }
        }
        drop(g);
        if result.is_ok() {
            let mut stored = self.stored.borrow_mut();
            if stored
                .as_ref()
                .is_none_or(|s| s.generation <= meta.generation)
            {
                *stored = Some(meta);
            }
        }
        self.notify();
    }

    /// Starts a JoinGroup.
    pub fn join(
        &self,
        args: JoinArgs,
        config: &GroupConfig,
        mut new_member_id: impl FnMut() -> String,
    ) -> JoinStep {
        let now = Instant::now();
        let mut g = self.inner.borrow_mut();
        if g.state == State::Dead {
            return JoinStep::Done(JoinResult::error(
                COORDINATOR_NOT_AVAILABLE,
                &args.member_id,
            ));
        }
        if args.session_timeout_ms < config.session_timeout_ms_min
            || args.session_timeout_ms > config.session_timeout_ms_max
        {
            return JoinStep::Done(JoinResult::error(INVALID_SESSION_TIMEOUT, &args.member_id));
        }
        if args.protocols.is_empty()
            || args.protocol_type.is_empty()
            || g.protocol_type
                .as_ref()
                .is_some_and(|t| *t != args.protocol_type && !g.members.is_empty())
            || !shares_a_protocol(&g, &args)
        {
            return JoinStep::Done(JoinResult::error(
                INCONSISTENT_GROUP_PROTOCOL,
                &args.member_id,
            ));
        }
        let mut member_id = args.member_id.clone();
        if member_id.is_empty() {
            // A static member coming back keeps its place.
            if let Some(instance) = &args.instance_id {
                if let Some(old) = g.instances.get(instance).cloned() {
                    if let Some(mut member) = g.members.remove(&old) {
                        let new_id = new_member_id();
                        member.id = new_id.clone();
                        member.last_seen = now;
                        let unchanged = member.protocols == args.protocols;
                        member.protocols = args.protocols.clone();
                        g.instances.insert(instance.clone(), new_id.clone());
                        if g.leader.as_deref() == Some(old.as_str()) {
                            g.leader = Some(new_id.clone());
                        }
                        g.members.insert(new_id.clone(), member);
                        if g.state == State::Stable && unchanged {
                            // No rebalance: the member gets its generation back and syncs
                            // to fetch its (unchanged) assignment.
                            let result = current_result(&g, &new_id);
                            drop(g);
                            self.notify();
                            return JoinStep::Done(result);
                        }
                        member_id = new_id;
                    }
                }
            }
        }
        if member_id.is_empty() {
            g.pending.retain(|_, until| *until > now);
            if g.members.len() + g.pending.len() >= config.members_max {
                return JoinStep::Done(JoinResult::error(GROUP_MAX_SIZE_REACHED, ""));
            }
            let id = new_member_id();
            if args.require_known_member_id && args.instance_id.is_none() {
                let until = now + Duration::from_millis(args.session_timeout_ms as u64);
                g.pending.insert(id.clone(), until);
                return JoinStep::Done(JoinResult::error(MEMBER_ID_REQUIRED, &id));
            }
            member_id = id;
        } else if !g.members.contains_key(&member_id) && g.pending.remove(&member_id).is_none() {
            return JoinStep::Done(JoinResult::error(UNKNOWN_MEMBER_ID, &member_id));
        }
        if let Some(instance) = &args.instance_id {
            if let Some(other) = g.instances.get(instance) {
                if *other != member_id {
                    return JoinStep::Done(JoinResult::error(FENCED_INSTANCE_ID, &member_id));
                }
            }
            g.instances.insert(instance.clone(), member_id.clone());
        }
        let known = g.members.get(&member_id).cloned();
        let unchanged = known
            .as_ref()
            .is_some_and(|m| m.protocols == args.protocols);
        let member = Member {
            id: member_id.clone(),
            instance_id: args.instance_id.clone(),
            client_id: args.client_id,
            client_host: args.client_host,
            session_timeout: Duration::from_millis(args.session_timeout_ms as u64),
            rebalance_timeout: Duration::from_millis(
                args.rebalance_timeout_ms.max(args.session_timeout_ms) as u64,
            ),
            protocols: args.protocols,
            assignment: known.map(|m| m.assignment).unwrap_or_default(),
            last_seen: now,
            joined: true,
            join_result: None,
        };
        g.members.insert(member_id.clone(), member);
        g.protocol_type = Some(args.protocol_type);
        match g.state {
            State::Stable if unchanged && g.leader.as_deref() != Some(member_id.as_str()) => {
                // A follower rejoining with nothing new: no rebalance (Kafka does the same).
                let result = current_result(&g, &member_id);
                return JoinStep::Done(result);
            }
            State::PreparingRebalance => {}
            State::Empty => {
                g.initial_delay_until = now + config.initial_rebalance_delay;
                start_rebalance(&mut g, now);
            }
            _ => start_rebalance(&mut g, now),
        }
        drop(g);
        self.notify();
        JoinStep::Wait(member_id)
    }

    /// Looks whether `member_id`'s join is answered, completing the rebalance if it is ready.
    pub fn poll_join(&self, member_id: &str) -> Poll<JoinResult> {
        let now = Instant::now();
        let mut g = self.inner.borrow_mut();
        let Some(member) = g.members.get_mut(member_id) else {
            return Poll::Done(JoinResult::error(UNKNOWN_MEMBER_ID, member_id));
        };
        if let Some(result) = member.join_result.take() {
            member.last_seen = now;
            return Poll::Done(result);
        }
        member.last_seen = now;
        if g.state != State::PreparingRebalance {
            // The rebalance this member waited for is over without it (it was removed and
            // re-added, or the group moved on): ask it to join again.
            return Poll::Done(JoinResult::error(REBALANCE_IN_PROGRESS, member_id));
        }
        let all_joined = g.members.values().all(|m| m.joined);
        let ready = (all_joined && now >= g.initial_delay_until) || now >= g.rebalance_deadline;
        if !ready {
            let next = if all_joined {
                g.initial_delay_until
            } else {
                g.rebalance_deadline
            };
            return Poll::Wait(next);
        }
        complete_rebalance(&mut g, now);
        let result = g
            .members
            .get_mut(member_id)
            .and_then(|m| m.join_result.take())
            .unwrap_or_else(|| JoinResult::error(UNKNOWN_MEMBER_ID, member_id));
        drop(g);
        self.notify();
        Poll::Done(result)
    }

    /// Starts a SyncGroup: the leader's assignments are stored; everyone waits for them.
    pub fn sync(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncStep {
        let mut g = self.inner.borrow_mut();
        if let Err(code) = check_member(&g, member_id, instance_id, generation) {
            return SyncStep::Done(Err(code));
        }
        if g.state == State::CompletingRebalance
            && !g.storing
            && g.leader.as_deref() == Some(member_id)
        {
            for member in g.members.values_mut() {
                member.assignment = Bytes::new();
            }
            for (id, assignment) in assignments {
                if let Some(member) = g.members.get_mut(&id) {
                    member.assignment = assignment;
                }
            }
            g.storing = true;
            return SyncStep::Store(Self::meta(&g));
        }
        drop(g);
        match self.poll_sync(member_id, generation) {
            Poll::Done(result) => SyncStep::Done(result),
            Poll::Wait(_) => SyncStep::Wait,
        }
    }

    pub fn poll_sync(&self, member_id: &str, generation: i32) -> Poll<Result<Bytes, i16>> {
        let now = Instant::now();
        let mut g = self.inner.borrow_mut();
        if g.generation != generation {
            return Poll::Done(Err(REBALANCE_IN_PROGRESS));
        }
        let state = g.state;
        let Some(member) = g.members.get_mut(member_id) else {
            return Poll::Done(Err(UNKNOWN_MEMBER_ID));
        };
        member.last_seen = now;
        match state {
            State::Stable => Poll::Done(Ok(member.assignment.clone())),
            // The assignment is being made durable: [`Group::stored`] notifies.
            State::CompletingRebalance if g.storing => Poll::Wait(now + Duration::from_secs(1)),
            State::CompletingRebalance if now < g.sync_deadline => Poll::Wait(g.sync_deadline),
            State::CompletingRebalance => {
                // The leader never sent the assignment: start over.
                tracing::info!(group = %self.id, generation, "leader did not sync in time; rebalancing");
                start_rebalance(&mut g, now);
                drop(g);
                self.notify();
                Poll::Done(Err(REBALANCE_IN_PROGRESS))
            }
            _ => Poll::Done(Err(REBALANCE_IN_PROGRESS)),
        }
    }

    pub fn heartbeat(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        let mut g = self.inner.borrow_mut();
        if let Err(code) = check_member(&g, member_id, instance_id, generation) {
            return code;
        }
        let state = g.state;
        if let Some(member) = g.members.get_mut(member_id) {
            member.last_seen = Instant::now();
        }
        match state {
            State::PreparingRebalance => REBALANCE_IN_PROGRESS,
            _ => NONE,
        }
    }

    /// Checks that a member may commit offsets for `generation`. Commits with generation
    /// -1 and no member id (a consumer that assigns partitions itself) need an empty group.
    ///
    /// As Kafka's classic coordinator: a transactional commit (TxnOffsetCommit) is checked
    /// for member and generation only; a plain one is also refused while the group is
    /// CompletingRebalance (the member already has the next generation and must sync
    /// first), but accepted while PreparingRebalance — consumers commit exactly then (auto-
    /// commit before rejoining, on revocation), and refusing would redeliver those records.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        transactional: bool,
    ) -> i16 {
        let g = self.inner.borrow();
        if generation < 0 && member_id.is_empty() {
            return if g.members.is_empty() {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            };
        }
        if let Err(code) = check_member(&g, member_id, instance_id, generation) {
            return code;
        }
        match g.state {
            State::CompletingRebalance if !transactional => REBALANCE_IN_PROGRESS,
            _ => NONE,
        }
    }

    /// Removes members (LeaveGroup); returns an error code per (member id, instance id).
    pub fn leave(&self, leaving: &[(String, Option<String>)]) -> Vec<i16> {
        let mut g = self.inner.borrow_mut();
        let mut codes = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance_id) in leaving {
            let id = match (member_id.is_empty(), instance_id) {
                (true, Some(instance)) => g.instances.get(instance).cloned().unwrap_or_default(),
                _ => member_id.clone(),
            };
            let fenced = instance_id
                .as_ref()
                .and_then(|instance| g.instances.get(instance))
                .is_some_and(|current| !member_id.is_empty() && current != member_id);
            if fenced {
                codes.push(FENCED_INSTANCE_ID);
                continue;
            }
            if remove_member(&mut g, &id) {
                removed = true;
                codes.push(NONE);
            } else {
                codes.push(UNKNOWN_MEMBER_ID);
            }
        }
        if removed {
            after_member_removed(&mut g, Instant::now());
            drop(g);
            self.notify();
        }
        codes
    }

    /// When `member_id` must next be checked for expiry; `None` once it is gone.
    pub fn member_deadline(&self, member_id: &str) -> Option<Instant> {
        let g = self.inner.borrow();
        let m = g.members.get(member_id)?;
        Some(m.last_seen + m.session_timeout)
    }

    /// Removes `member_id` if its session timed out; true if it is gone (now or before).
    pub fn expire_member(&self, member_id: &str) -> bool {
        let now = Instant::now();
        let mut g = self.inner.borrow_mut();
        let Some(m) = g.members.get(member_id) else {
            return true;
        };
        if now < m.last_seen + m.session_timeout {
            return false;
        }
        tracing::info!(group = %self.id, member = member_id, "member session timed out; removing it");
        remove_member(&mut g, member_id);
        after_member_removed(&mut g, now);
        drop(g);
        self.notify();
        true
    }

    /// Committed offsets that expired under Kafka's rule (`GroupMetadata.removeExpiredOffsets`,
    /// KIP-211): in an Empty group, every offset `retention_ms` after the group became empty
    /// (after its commit, for a group that never had members, and never before its commit:
    /// an offset committed into an empty group gets the full retention); in a Stable
    /// consumer-protocol group, offsets of topics no member subscribes to, `retention_ms`
    /// after their commit. Offsets with a transactional commit pending are kept.
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        let g = self.inner.borrow();
        let (since, subscribed) = match g.state {
            State::Empty => (g.empty_since_ms, None),
            State::Stable => match subscribed_topics(&g) {
                Some(topics) => (None, Some(topics)),
                None => return Vec::new(),
            },
            _ => return Vec::new(),
        };
        let pending = self.txn_offsets.borrow();
        self.offsets
            .borrow()
            .iter()
            .filter(|((topic, _), _)| subscribed.as_ref().is_none_or(|s| !s.contains(topic)))
            .filter(|(key, c)| {
                let base = since.map_or(c.commit_ms, |s| s.max(c.commit_ms));
                now_ms.saturating_sub(base) >= retention_ms
                    && !pending.values().any(|o| o.contains_key(*key))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Empty with nothing committed or pending and no member id handed out that may still
    /// join: the group can be forgotten (Kafka's Dead).
    pub fn removable(&self) -> bool {
        let now = Instant::now();
        let g = self.inner.borrow();
        g.state == State::Empty
            && g.pending.values().all(|until| *until <= now)
            && self.offsets.borrow().is_empty()
            && self.txn_offsets.borrow().is_empty()
    }

    /// The topics the members of a consumer-protocol group subscribe to, read from their
    /// metadata for the chosen protocol; `None` if that cannot be told (another protocol
    /// type, no protocol chosen, or metadata that does not decode).
    pub fn subscribed_topics(&self) -> Option<std::collections::HashSet<String>> {
        subscribed_topics(&self.inner.borrow())
    }

    /// Marks the group dead (deleted); waiting members get errors.
    pub fn kill(&self) {
        let mut g = self.inner.borrow_mut();
        g.state = State::Dead;
        g.members.clear();
        drop(g);
        self.notify();
    }
}

fn subscribed_topics(inner: &Inner) -> Option<std::collections::HashSet<String>> {
    use crate::protocol::codec::decode_consumer_protocol;
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    if inner.protocol_type.as_deref() != Some("consumer") {
        return None;
    }
    let protocol = inner.protocol_name.clone()?;
    let mut topics = std::collections::HashSet::new();
    for member in inner.members.values() {
        let (_, metadata) = member.protocols.iter().find(|(n, _)| *n == protocol)?;
        let subscription: ConsumerProtocolSubscription = decode_consumer_protocol(metadata)?;
        topics.extend(subscription.topics.iter().map(|t| t.to_string()));
    }
    Some(topics)
}

fn shares_a_protocol(g: &Inner, args: &JoinArgs) -> bool {
    g.members
        .values()
        .filter(|m| m.id != args.member_id)
        .all(|m| {
            m.protocols
                .iter()
                .any(|(name, _)| args.protocols.iter().any(|(n, _)| n == name))
        })
}

fn check_member(
    g: &Inner,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
) -> Result<(), i16> {
    if g.state == State::Dead {
        return Err(COORDINATOR_NOT_AVAILABLE);
    }
    if let Some(instance) = instance_id {
        if let Some(current) = g.instances.get(instance) {
            if current != member_id {
                return Err(FENCED_INSTANCE_ID);
            }
        }
    }
    if !g.members.contains_key(member_id) {
        return Err(UNKNOWN_MEMBER_ID);
    }
    if generation != g.generation {
        return Err(ILLEGAL_GENERATION);
    }
    Ok(())
}

fn start_rebalance(g: &mut Inner, now: Instant) {
    let timeout = g
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    g.state = State::PreparingRebalance;
    g.storing = false;
    g.rebalance_deadline = now + timeout;
    for member in g.members.values_mut() {
        member.join_result = None;
    }
}

/// Ends PreparingRebalance: drops members that did not rejoin, picks the protocol and the
/// leader, bumps the generation and answers every joined member.
fn complete_rebalance(g: &mut Inner, now: Instant) {
    let gone: Vec<String> = g
        .members
        .values()
        .filter(|m| !m.joined)
        .map(|m| m.id.clone())
        .collect();
    for id in gone {
        remove_member(g, &id);
    }
    if g.members.is_empty() {
        g.state = State::Empty;
        g.generation += 1;
        g.protocol_name = None;
        g.leader = None;
        g.empty_since_ms = Some(crate::util::now_ms());
        return;
    }
    g.generation += 1;
    g.protocol_name = Some(select_protocol(g));
    if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
        g.leader = g.members.keys().next().cloned();
    }
    g.state = State::CompletingRebalance;
    let sync_timeout = g
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    g.sync_deadline = now + sync_timeout;
    let ids: Vec<String> = g.members.keys().cloned().collect();
    for id in ids {
        let result = current_result(g, &id);
        if let Some(m) = g.members.get_mut(&id) {
            m.joined = false;
            m.join_result = Some(result);
            m.last_seen = now;
        }
    }
}

/// The JoinGroup answer for `member_id` in the current generation.
fn current_result(g: &Inner, member_id: &str) -> JoinResult {
    let protocol = g.protocol_name.clone().unwrap_or_default();
    let leader = g.leader.clone().unwrap_or_default();
    let members = if leader == member_id {
        g.members
            .values()
            .map(|m| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                (m.id.clone(), m.instance_id.clone(), metadata)
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResult {
        error_code: NONE,
        generation: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol_name: g.protocol_name.clone(),
        leader,
        member_id: member_id.to_string(),
        members,
    }
}

/// The protocol every member supports that most members prefer (Kafka's vote).
fn select_protocol(g: &Inner) -> String {
    let mut candidates: Vec<&str> = match g.members.values().next() {
        Some(first) => first.protocols.iter().map(|(n, _)| n.as_str()).collect(),
        None => return String::new(),
    };
    candidates.retain(|c| {
        g.members
            .values()
            .all(|m| m.protocols.iter().any(|(n, _)| n == c))
    });
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for m in g.members.values() {
        if let Some((name, _)) = m
            .protocols
            .iter()
            .find(|(n, _)| candidates.contains(&n.as_str()))
        {
            *votes.entry(name.as_str()).or_default() += 1;
        }
    }
    candidates
        .iter()
        .max_by_key(|c| {
            (
                votes.get(*c).copied().unwrap_or(0),
                std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
            )
        })
        .map(|c| c.to_string())
        .unwrap_or_default()
}

fn remove_member(g: &mut Inner, member_id: &str) -> bool {
    let Some(member) = g.members.remove(member_id) else {
        return false;
    };
    if let Some(instance) = member.instance_id {
        if g.instances.get(&instance).map(String::as_str) == Some(member_id) {
            g.instances.remove(&instance);
        }
    }
    if g.leader.as_deref() == Some(member_id) {
        g.leader = None;
    }
    true
}

fn after_member_removed(g: &mut Inner, now: Instant) {
    if g.members.is_empty() {
        g.state = State::Empty;
        g.generation += 1;
        g.leader = None;
        g.protocol_name = None;
        g.empty_since_ms = Some(crate::util::now_ms());
        return;
    }
    match g.state {
        State::Stable | State::CompletingRebalance => start_rebalance(g, now),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            session_timeout_ms_min: 10,
            session_timeout_ms_max: 600_000,
            members_max: 100,
        }
    }

    fn args(member_id: &str, protocols: &[&str]) -> JoinArgs {
        JoinArgs {
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from_static(b"md")))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn group() -> Group {
        Group::new("g".into(), Rc::new(Notify::default()))
    }

    /// Joins `n` members (with the member-id round trip) and completes the rebalance.
    fn form(g: &Group, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let JoinStep::Done(required) =
                g.join(args("", &["range"]), &config(), || format!("m{i}"))
            else {
                panic!("expected MEMBER_ID_REQUIRED")
            };
            assert_eq!(required.error_code, MEMBER_ID_REQUIRED);
            let JoinStep::Wait(id) = g.join(
                args(&required.member_id, &["range"]),
                &config(),
                || unreachable!(),
            ) else {
                panic!("expected to wait")
            };
            ids.push(id);
        }
        for id in &ids {
            let Poll::Done(result) = g.poll_join(id) else {
                panic!("join not complete")
            };
            assert_eq!(result.error_code, NONE);
        }
        ids
    }

    #[test]
    fn join_storm_forms_one_generation_with_one_leader() {
        let g = group();
        let ids = form(&g, 5);
        let inner = g.inner.borrow();
        assert_eq!(inner.state, State::CompletingRebalance);
        assert_eq!(inner.generation, 1);
        assert_eq!(inner.members.len(), 5);
        assert!(ids.contains(inner.leader.as_ref().unwrap()));
    }

    /// The leader's SyncGroup, its membership stored: the leader's own answer.
    fn sync_stored(
        g: &Group,
        leader: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, i16> {
        match g.sync(leader, None, generation, assignments) {
            SyncStep::Store(meta) => {
                g.stored(meta, Ok(()));
                match g.poll_sync(leader, generation) {
                    Poll::Done(result) => result,
                    Poll::Wait(_) => panic!("stored, yet the leader waits"),
                }
            }
            SyncStep::Done(result) => result,
            SyncStep::Wait => panic!("the leader waits"),
        }
    }

    #[test]
    fn leader_sync_makes_group_stable_and_delivers_assignments_once_stored() {
        let g = group();
        let ids = form(&g, 2);
        let leader = g.inner.borrow().leader.clone().unwrap();
        let follower = ids.iter().find(|i| **i != leader).unwrap().clone();
        // The follower waits until the leader has synced.
        assert!(matches!(g.sync(&follower, None, 1, vec![]), SyncStep::Wait));
        let assignments: Vec<(String, Bytes)> = ids
            .iter()
            .map(|i| (i.clone(), Bytes::from(i.clone().into_bytes())))
            .collect();
        let SyncStep::Store(meta) = g.sync(&leader, None, 1, assignments) else {
            panic!()
        };
        assert_eq!(meta.generation, 1);
        assert_eq!(meta.members.len(), 2);
        // Nobody gets an assignment before it is durable, and the leader syncing again
        // does not store twice.
        assert!(matches!(g.poll_sync(&follower, 1), Poll::Wait(_)));
        assert!(matches!(g.sync(&leader, None, 1, vec![]), SyncStep::Wait));
        g.stored(meta.clone(), Ok(()));
        assert_eq!(g.state(), State::Stable);
        assert_eq!(g.stored.borrow().as_ref(), Some(&meta));
        let Poll::Done(Ok(mine)) = g.poll_sync(&leader, 1) else {
            panic!()
        };
        assert_eq!(mine, Bytes::from(leader.clone().into_bytes()));
        let Poll::Done(Ok(theirs)) = g.poll_sync(&follower, 1) else {
            panic!()
        };
        assert_eq!(theirs, Bytes::from(follower.clone().into_bytes()));
    }

    #[test]
    fn an_assignment_that_cannot_be_stored_starts_the_rebalance_over() {
        let g = group();
        let ids = form(&g, 2);
        let leader = g.inner.borrow().leader.clone().unwrap();
        let assignments = ids.iter().map(|i| (i.clone(), Bytes::from("x"))).collect();
        let SyncStep::Store(meta) = g.sync(&leader, None, 1, assignments) else {
            panic!()
        };
        g.stored(meta, Err(NOT_COORDINATOR));
        assert_eq!(g.state(), State::PreparingRebalance);
        assert!(g.stored.borrow().is_none());
        assert!(matches!(
            g.poll_sync(&ids[0], 1),
            Poll::Done(Err(REBALANCE_IN_PROGRESS))
        ));
    }

    #[test]
    fn a_restored_membership_keeps_generation_assignments_and_static_members() {
        let g = group();
        let mut a = args("", &["range"]);
        a.instance_id = Some("static-1".into());
        let JoinStep::Wait(first) = g.join(a, &config(), || "m1".into()) else {
            panic!()
        };
        let Poll::Done(_) = g.poll_join(&first) else {
            panic!()
        };
        let SyncStep::Store(meta) = g.sync(&first, None, 1, vec![(first.clone(), "p0".into())])
        else {
            panic!()
        };
        g.stored(meta.clone(), Ok(()));

        // Another coordinator takes the group up from the durable record.
        let taken = group();
        taken.restore(meta.clone(), 0);
        assert_eq!(taken.state(), State::Stable);
        assert_eq!(taken.generation(), 1);
        assert_eq!(taken.heartbeat(&first, Some("static-1"), 1), NONE);
        assert_eq!(taken.check_commit(&first, Some("static-1"), 1, false), NONE);
        assert_eq!(
            taken.heartbeat("m-other", Some("static-1"), 1),
            FENCED_INSTANCE_ID
        );
        // The member syncs again (librdkafka does after a coordinator change): the same
        // assignment, no rebalance.
        assert!(matches!(
            taken.sync(&first, Some("static-1"), 1, vec![]),
            SyncStep::Done(Ok(ref a)) if a == &Bytes::from("p0")
        ));
        // Once its last member leaves, the Empty group is what must be stored next.
        assert_eq!(taken.empty_to_store(), None);
        taken.leave(&[(first.clone(), Some("static-1".into()))]);
        let empty = taken
            .empty_to_store()
            .expect("an Empty membership to store");
        assert!(empty.members.is_empty());
        assert_eq!(empty.generation, 2);
        taken.stored(empty, Ok(()));
        assert_eq!(taken.empty_to_store(), None);
    }

    #[test]
    fn heartbeats_during_rebalance_unknown_member_and_stale_generation() {
        let g = group();
        let ids = form(&g, 2);
        let leader = g.inner.borrow().leader.clone().unwrap();
        sync_stored(&g, &leader, 1, vec![]).expect("synced");
        assert_eq!(g.heartbeat(&ids[0], None, 1), NONE);
        assert_eq!(g.heartbeat("nobody", None, 1), UNKNOWN_MEMBER_ID);
        assert_eq!(g.heartbeat(&ids[0], None, 0), ILLEGAL_GENERATION);
        // A new member triggers a rebalance: existing members hear about it by heartbeat.
        let JoinStep::Done(r) = g.join(args("", &["range"]), &config(), || "new".into()) else {
            panic!()
        };
        let JoinStep::Wait(_) =
            g.join(args(&r.member_id, &["range"]), &config(), || unreachable!())
        else {
            panic!()
        };
        assert_eq!(g.heartbeat(&ids[0], None, 1), REBALANCE_IN_PROGRESS);
        // As in Kafka, commits of the current generation are still accepted while the
        // group prepares a rebalance (consumers commit on revocation), plain or
        // transactional.
        assert_eq!(g.check_commit(&ids[0], None, 1, false), NONE);
        assert_eq!(g.check_commit(&ids[0], None, 1, true), NONE);
        assert_eq!(g.check_commit(&ids[0], None, 0, false), ILLEGAL_GENERATION);
    }

    #[test]
    fn a_leader_that_never_syncs_restarts_the_rebalance() {
        let g = group();
        let ids = form(&g, 2);
        g.inner.borrow_mut().sync_deadline = Instant::now() - Duration::from_millis(1);
        let leader = g.inner.borrow().leader.clone().unwrap();
        let follower = ids.iter().find(|i| **i != leader).unwrap();
        assert!(matches!(
            g.poll_sync(follower, 1),
            Poll::Done(Err(REBALANCE_IN_PROGRESS))
        ));
        assert_eq!(g.state(), State::PreparingRebalance);
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
        let g = group();
        let ids = form(&g, 3);
        let leader = g.inner.borrow().leader.clone().unwrap();
        sync_stored(&g, &leader, 1, vec![]).expect("synced");
        // Only one member rejoins.
        let JoinStep::Wait(id) = g.join(args(&ids[0], &["range"]), &config(), || unreachable!())
        else {
            panic!()
        };
        assert!(matches!(g.poll_join(&id), Poll::Wait(_)));
        g.inner.borrow_mut().rebalance_deadline = Instant::now() - Duration::from_millis(1);
        let Poll::Done(result) = g.poll_join(&id) else {
            panic!()
        };
        assert_eq!(result.error_code, NONE);
        assert_eq!(result.generation, 2);
        assert_eq!(g.inner.borrow().members.len(), 1);
        assert_eq!(result.leader, id);
    }

    #[test]
    fn leave_and_expiry_empty_the_group() {
        let g = group();
        let ids = form(&g, 2);
        assert_eq!(
            g.leave(&[(ids[0].clone(), None), ("ghost".into(), None)]),
            vec![NONE, UNKNOWN_MEMBER_ID]
        );
        assert_eq!(g.state(), State::PreparingRebalance);
        g.inner
            .borrow_mut()
            .members
            .get_mut(&ids[1])
            .unwrap()
            .last_seen = Instant::now() - Duration::from_secs(60);
        assert!(g.expire_member(&ids[1]));
        assert_eq!(g.state(), State::Empty);
        assert_eq!(g.check_commit("", None, -1, false), NONE);
    }

    #[test]
    fn member_ids_never_used_stop_counting_against_the_size_limit() {
        let g = group();
        let small = GroupConfig {
            members_max: 2,
            ..config()
        };
        for i in 0..2 {
            let mut a = args("", &["range"]);
            a.session_timeout_ms = 10;
            let JoinStep::Done(r) = g.join(a, &small, || format!("p{i}")) else {
                panic!()
            };
            assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
        }
        let JoinStep::Done(r) = g.join(args("", &["range"]), &small, || "full".into()) else {
            panic!()
        };
        assert_eq!(r.error_code, GROUP_MAX_SIZE_REACHED);
        std::thread::sleep(Duration::from_millis(20));
        let JoinStep::Done(r) = g.join(args("", &["range"]), &small, || "later".into()) else {
            panic!()
        };
        assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
    }

    #[test]
    fn inconsistent_protocols_are_refused() {
        let g = group();
        form(&g, 1);
        let JoinStep::Done(r) = g.join(args("", &["other"]), &config(), || "x".into()) else {
            panic!()
        };
        assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
    }

    fn commit(commit_ms: i64) -> Committed {
        Committed {
            offset: 1,
            leader_epoch: -1,
            metadata: None,
            commit_ms,
        }
    }

    fn key(topic: &str) -> (String, i32) {
        (topic.to_string(), 0)
    }

    #[test]
    fn offsets_of_a_group_that_never_had_members_expire_after_their_commit() {
        let g = group();
        g.offsets.borrow_mut().insert(key("a"), commit(1_000));
        g.offsets.borrow_mut().insert(key("b"), commit(2_000));
        assert!(g.expired_offsets(1_499, 500).is_empty());
        assert_eq!(g.expired_offsets(1_500, 500), vec![key("a")]);
        assert_eq!(g.expired_offsets(2_500, 500), vec![key("a"), key("b")]);
        // An offset with a transactional commit pending stays.
        g.txn_offsets
            .borrow_mut()
            .insert(7, [(key("a"), commit(3_000))].into_iter().collect());
        assert_eq!(g.expired_offsets(9_000, 500), vec![key("b")]);
        assert!(!g.removable());
        g.offsets.borrow_mut().clear();
        g.txn_offsets.borrow_mut().clear();
        assert!(g.removable());
    }

    #[test]
    fn offsets_of_a_group_with_members_stay_until_it_has_been_empty_long_enough() {
        let g = group();
        g.offsets.borrow_mut().insert(key("a"), commit(0));
        let ids = form(&g, 2);
        let leader = g.inner.borrow().leader.clone().unwrap();
        sync_stored(&g, &leader, 1, vec![]).expect("synced");
        assert_eq!(g.state(), State::Stable);
        // Members whose subscription cannot be read keep every offset, however old.
        assert!(g.expired_offsets(i64::MAX, 1).is_empty());
        assert!(!g.removable());
        let left = crate::util::now_ms();
        g.leave(&[(ids[0].clone(), None), (ids[1].clone(), None)]);
        assert_eq!(g.state(), State::Empty);
        let since = g.inner.borrow().empty_since_ms.unwrap();
        assert!(since >= left);
        assert!(g.expired_offsets(since + 999, 1_000).is_empty());
        assert_eq!(g.expired_offsets(since + 1_000, 1_000), vec![key("a")]);
        // An offset committed into the empty group later gets the full retention.
        g.offsets
            .borrow_mut()
            .insert(key("b"), commit(since + 5_000));
        assert_eq!(g.expired_offsets(since + 5_999, 1_000), vec![key("a")]);
    }

    #[test]
    fn a_stable_consumer_group_loses_offsets_of_topics_it_no_longer_subscribes_to() {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut subscription = ConsumerProtocolSubscription::default();
        subscription.topics = vec![StrBytes::from_static_str("a")];
        let mut metadata = bytes::BytesMut::new();
        metadata.extend_from_slice(&0i16.to_be_bytes());
        subscription.encode(&mut metadata, 0).unwrap();
        let g = group();
        let mut a = args("", &["range"]);
        a.protocols = vec![("range".into(), metadata.freeze())];
        a.require_known_member_id = false;
        let JoinStep::Wait(id) = g.join(a, &config(), || "m".into()) else {
            panic!()
        };
        let Poll::Done(_) = g.poll_join(&id) else {
            panic!()
        };
        sync_stored(&g, &id, 1, vec![]).expect("synced");
        assert_eq!(g.state(), State::Stable);
        g.offsets.borrow_mut().insert(key("a"), commit(0));
        g.offsets.borrow_mut().insert(key("b"), commit(0));
        assert_eq!(g.expired_offsets(999, 1_000), Vec::<(String, i32)>::new());
        assert_eq!(g.expired_offsets(1_000, 1_000), vec![key("b")]);
    }

    #[test]
    fn protocol_vote_prefers_what_most_members_list_first() {
        let g = group();
        for (i, protocols) in [
            ["range", "roundrobin"],
            ["roundrobin", "range"],
            ["roundrobin", "range"],
        ]
        .iter()
        .enumerate()
        {
            let mut a = args("", protocols);
            a.require_known_member_id = false;
            let JoinStep::Wait(_) = g.join(a, &config(), || format!("m{i}")) else {
                panic!()
            };
        }
        let Poll::Done(result) = g.poll_join("m0") else {
            panic!()
        };
        assert_eq!(result.protocol_name.as_deref(), Some("roundrobin"));
    }
}
