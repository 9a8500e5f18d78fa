//! `strand group …`: consumer groups as Kafka's `kafka-consumer-groups.sh` shows and
//! changes them: list, describe (committed offsets, log end offsets, lag and the member
//! owning each partition), delete, and reset-offsets (a plan by default, committed with
//! `--execute`, refused while the group has active members).

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use serde_json::json;

use super::client::{describe_error, Conn, Failure};
use super::progress::{self, Progress};
use super::{
    finish, print_json, print_table, report, result_error, text, topic_hint, Connection, Format,
    Leaders, Session,
};
use crate::protocol::codec::decode_consumer_protocol;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Every group of the cluster (ListGroups at every broker): id, state, protocol type.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// A group's state and members, and for each partition it has committed offsets for
    /// or is assigned: the committed offset, the log end offset, the lag, the owner.
    Describe {
        #[command(flatten)]
        connection: Connection,
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Delete groups without active members, with their committed offsets (DeleteGroups).
    Delete {
        #[command(flatten)]
        connection: Connection,
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets: prints the plan; commits it with --execute.
    /// Refused while the group has active members.
    ResetOffsets(Box<ResetOffsets>),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime"])
))]
pub struct ResetOffsets {
    #[command(flatten)]
    connection: Connection,
    /// The group whose offsets move.
    group: String,
    /// A topic, all its partitions, or `TOPIC:P,P,…` those partitions (repeatable).
    #[arg(long = "topic", value_name = "TOPIC[:P,P…]")]
    topics: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// To this offset (kept within the log start and end offsets).
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    to_offset: Option<i64>,
    /// The committed offset plus N (negative: back), kept within the log.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// To the first record at or after `YYYY-MM-DDTHH:MM:SS[.sss][Z|±hh:mm]` (without a
    /// zone: local time); the log end offset if there is none.
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// Only print the plan (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
}

/// Runs a group command; returns the process exit code.
pub fn group(command: GroupCommand) -> i32 {
    finish(match command {
        GroupCommand::List { connection } => group_list(&connection),
        GroupCommand::Describe { connection, groups } => group_describe(&connection, &groups),
        GroupCommand::Delete { connection, groups } => group_delete(&connection, &groups),
        GroupCommand::ResetOffsets(args) => group_reset_offsets(&args),
    })
}

fn group_list(connection: &Connection) -> Result<i32, Failure> {
    let mut session = Session::open(connection)?;
    session.metadata(Some(&[]))?;
    // Each broker lists the groups it coordinates.
    let ids: Vec<i32> = session.brokers.keys().copied().collect();
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut failures = Vec::new();
    for id in ids {
        let answer = session.broker(id).and_then(|conn| {
            let version = conn.version(ApiKey::ListGroups, 0, 5)?;
            conn.call::<_, ListGroupsResponse>(
                ApiKey::ListGroups,
                version,
                &ListGroupsRequest::default(),
            )
        });
        match answer {
            Ok(response) if response.error_code != 0 => failures.push(format!(
                "broker {id}: {}",
                describe_error(response.error_code, None)
            )),
            Ok(response) => {
                for g in response.groups {
                    groups.insert(
                        g.group_id.0.to_string(),
                        (g.group_state.to_string(), g.protocol_type.to_string()),
                    );
                }
            }
            Err(failure) => failures.push(format!("broker {id}: {failure}")),
        }
    }
    let dash = |s: &str| {
        if s.is_empty() {
            "-".into()
        } else {
            s.to_string()
        }
    };
    match connection.format {
        Format::Json => print_json(&json!(groups
            .iter()
            .map(|(id, (state, protocol_type))| json!({
                "group": id, "state": state, "protocol_type": protocol_type,
            }))
            .collect::<Vec<_>>())),
        Format::Table => print_table(
            &["GROUP", "STATE", "PROTOCOL-TYPE"],
            groups
                .iter()
                .map(|(id, (state, protocol_type))| {
                    vec![id.clone(), dash(state), dash(protocol_type)]
                })
                .collect(),
        ),
    }
    if failures.is_empty() {
        Ok(0)
    } else {
        Err(Failure::new(format!(
            "the list may be incomplete: {}",
            failures.join("; ")
        )))
    }
}

/// A member as DescribeGroups shows it, its assignment decoded.
struct Member {
    id: String,
    instance: Option<String>,
    client_id: String,
    host: String,
    partitions: Vec<(String, i32)>,
}

/// A group as its coordinator describes it, with its committed offsets.
struct GroupState {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
    committed: BTreeMap<(String, i32), i64>,
}

/// DescribeGroups and OffsetFetch (every partition) at the group's coordinator.
fn read_group(session: &mut Session, group: &str) -> Result<GroupState, Failure> {
    let conn = session.coordinator(group)?;
    let version = conn.version(ApiKey::DescribeGroups, 0, 6)?;
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]);
    let response: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, version, &request)?;
    let described = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| Failure::new("DescribeGroups answered no group"))?;
    if described.error_code != 0 {
        return Err(Failure::new(format!(
            "group {group}: {}",
            result_error(described.error_code, &described.error_message)
        )));
    }
    let consumer = described.protocol_type.as_str() == "consumer";
    let members = described
        .members
        .iter()
        .map(|m| Member {
            id: m.member_id.to_string(),
            instance: m.group_instance_id.as_ref().map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            partitions: if consumer {
                decode_consumer_protocol::<ConsumerProtocolAssignment>(&m.member_assignment)
                    .map(|a| {
                        a.assigned_partitions
                            .iter()
                            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(GroupState {
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members,
        committed: committed_offsets(conn, group)?,
    })
}

/// The group's committed offsets, every partition (OffsetFetch with no topic list).
pub(super) fn committed_offsets(
    conn: &mut Conn,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, Failure> {
    let version = conn.version(ApiKey::OffsetFetch, 2, 9)?;
    let mut request = OffsetFetchRequest::default();
    if version >= 8 {
        request.groups = vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(text(group)))
            .with_member_epoch(-1)
            .with_topics(None)];
    } else {
        request.group_id = GroupId(text(group));
        request.topics = None;
    }
    let response: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, version, &request)?;
    let (code, offsets): (i16, Vec<(String, i32, i64, i16)>) = if version >= 8 {
        let g = response
            .groups
            .first()
            .ok_or_else(|| Failure::new("OffsetFetch answered no group"))?;
        let offsets = g.topics.iter().flat_map(|t| {
            t.partitions.iter().map(|p| {
                let topic = t.name.0.to_string();
                (topic, p.partition_index, p.committed_offset, p.error_code)
            })
        });
        (g.error_code, offsets.collect())
    } else {
        let offsets = response.topics.iter().flat_map(|t| {
            t.partitions.iter().map(|p| {
                let topic = t.name.0.to_string();
                (topic, p.partition_index, p.committed_offset, p.error_code)
            })
        });
        (response.error_code, offsets.collect())
    };
    if code != 0 {
        return Err(Failure::new(format!(
            "committed offsets of group {group}: {}",
            describe_error(code, None)
        )));
    }
    Ok(offsets
        .into_iter()
        .filter(|&(_, _, offset, code)| code == 0 && offset >= 0)
        .map(|(topic, partition, offset, _)| ((topic, partition), offset))
        .collect())
}

/// A partition in `group describe`.
#[derive(Clone, Copy, Default)]
struct PartitionLag {
    committed: Option<i64>,
    log_end: Option<i64>,
    /// Index of the member it is assigned to.
    owner: Option<usize>,
}

/// `group describe` of one group: its partitions with their owners and lag.
struct Described {
    group: String,
    state: GroupState,
    partitions: BTreeMap<(String, i32), PartitionLag>,
}

impl Described {
    fn lag(committed: Option<i64>, end: Option<i64>) -> Option<i64> {
        Some(end? - committed?)
    }

    fn total_lag(&self) -> i64 {
        self.partitions
            .values()
            .filter_map(|p| Self::lag(p.committed, p.log_end))
            .sum()
    }
}

fn describe_one(session: &mut Session, group: &str) -> Result<Described, Failure> {
    let state = read_group(session, group)?;
    if state.state == "Dead" && state.members.is_empty() && state.committed.is_empty() {
        return Err(Failure::new(format!(
            "group {group} does not exist (strand group list shows the groups)"
        )));
    }
    let mut partitions: BTreeMap<(String, i32), PartitionLag> = state
        .committed
        .iter()
        .map(|(key, &offset)| {
            (
                key.clone(),
                PartitionLag {
                    committed: Some(offset),
                    ..PartitionLag::default()
                },
            )
        })
        .collect();
    for (index, member) in state.members.iter().enumerate() {
        for key in &member.partitions {
            partitions.entry(key.clone()).or_default().owner = Some(index);
        }
    }
    let topics: BTreeSet<&str> = partitions.keys().map(|(t, _)| t.as_str()).collect();
    if !topics.is_empty() {
        let (leaders, _) = session.leaders(&topics.into_iter().collect::<Vec<_>>())?;
        let leaders: Leaders = leaders
            .into_iter()
            .filter(|(key, _)| partitions.contains_key(key))
            .collect();
        for (key, end) in session.list_offsets(&leaders, -1) {
            if let (Some(p), Ok(end)) = (partitions.get_mut(&key), end) {
                p.log_end = Some(end);
            }
        }
    }
    Ok(Described {
        group: group.to_string(),
        state,
        partitions,
    })
}

fn group_describe(connection: &Connection, groups: &[String]) -> Result<i32, Failure> {
    let mut session = Session::open(connection)?;
    let mut described = Vec::new();
    let mut failed = false;
    for group in groups {
        match describe_one(&mut session, group) {
            Ok(d) => described.push(d),
            Err(failure) => {
                report(&failure);
                failed = true;
            }
        }
    }
    match connection.format {
        Format::Json => print_json(&json!(described
            .iter()
            .map(|d| {
                let members = &d.state.members;
                json!({
                    "group": d.group,
                    "state": d.state.state,
                    "protocol_type": d.state.protocol_type,
                    "protocol": d.state.protocol,
                    "total_lag": d.total_lag(),
                    "members": members.iter().map(|m| json!({
                        "member_id": m.id, "group_instance_id": m.instance,
                        "client_id": m.client_id, "host": m.host,
                        "assignment": m.partitions.iter().map(|(t, p)| json!({
                            "topic": t, "partition": p,
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "partitions": d.partitions.iter().map(|((t, p), &PartitionLag { committed, log_end: end, owner })| {
                        let owner = owner.map(|i| &members[i]);
                        json!({
                            "topic": t, "partition": p, "committed_offset": committed,
                            "log_end_offset": end, "lag": Described::lag(committed, end),
                            "member_id": owner.map(|m| &m.id),
                            "client_id": owner.map(|m| &m.client_id),
                            "host": owner.map(|m| &m.host),
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect::<Vec<_>>())),
        Format::Table => {
            for (i, d) in described.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                let members = &d.state.members;
                println!(
                    "Group: {}  State: {}  Members: {}  Total lag: {}",
                    d.group,
                    d.state.state,
                    members.len(),
                    d.total_lag()
                );
                let dash = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                let mut rows: Vec<Vec<String>> = d
                    .partitions
                    .iter()
                    .map(|((t, p), &PartitionLag { committed, log_end: end, owner })| {
                        let owner = owner.map(|i| &members[i]);
                        let field = |f: fn(&Member) -> &String| {
                            owner.map(|m| f(m).clone()).unwrap_or_else(|| "-".into())
                        };
                        vec![
                            d.group.clone(),
                            t.clone(),
                            p.to_string(),
                            dash(committed),
                            dash(end),
                            dash(Described::lag(committed, end)),
                            field(|m| &m.id),
                            field(|m| &m.host),
                            field(|m| &m.client_id),
                        ]
                    })
                    .collect();
                // Members with no partition, as kafka-consumer-groups.sh shows them.
                for m in members.iter().filter(|m| m.partitions.is_empty()) {
                    rows.push(vec![
                        d.group.clone(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        m.id.clone(),
                        m.host.clone(),
                        m.client_id.clone(),
                    ]);
                }
                print_table(
                    &[
                        "GROUP",
                        "TOPIC",
                        "PARTITION",
                        "CURRENT-OFFSET",
                        "LOG-END-OFFSET",
                        "LAG",
                        "CONSUMER-ID",
                        "HOST",
                        "CLIENT-ID",
                    ],
                    rows,
                );
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn group_delete(connection: &Connection, groups: &[String]) -> Result<i32, Failure> {
    let mut session = Session::open(connection)?;
    let mut results = Vec::with_capacity(groups.len());
    for group in groups {
        let result = session.coordinator(group).and_then(|conn| {
            let version = conn.version(ApiKey::DeleteGroups, 0, 2)?;
            let request =
                DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text(group))]);
            let response: DeleteGroupsResponse =
                conn.call(ApiKey::DeleteGroups, version, &request)?;
            let code = response
                .results
                .first()
                .ok_or_else(|| Failure::new("DeleteGroups answered no group"))?
                .error_code;
            if code == 0 {
                return Ok(());
            }
            let hint = match code {
                68 => " (it has active members: stop its consumers first)",
                69 => " (strand group list shows the groups)",
                14..=16 => " (its coordinator is moving; try again)",
                _ => "",
            };
            Err(Failure::new(format!(
                "cannot delete group {group}: {}{hint}",
                describe_error(code, None)
            )))
        });
        if let Err(failure) = &result {
            report(failure);
        }
        results.push((group, result));
    }
    match connection.format {
        Format::Json => print_json(&json!(results
            .iter()
            .map(|(group, result)| json!({
                "group": group,
                "deleted": result.is_ok(),
                "error": result.as_ref().err().map(|f| f.message.clone()),
            }))
            .collect::<Vec<_>>())),
        Format::Table => {
            for (group, _) in results.iter().filter(|(_, r)| r.is_ok()) {
                println!("deleted group {group}");
            }
        }
    }
    Ok(if results.iter().all(|(_, r)| r.is_ok()) {
        0
    } else {
        1
    })
}

/// Where reset-offsets moves each partition.
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Shift(i64),
    /// Milliseconds since the epoch.
    Time(i64),
}

impl Target {
    fn of(args: &ResetOffsets) -> Result<Target, Failure> {
        Ok(if args.to_earliest {
            Target::Earliest
        } else if args.to_latest {
            Target::Latest
        } else if let Some(offset) = args.to_offset {
            Target::Offset(offset)
        } else if let Some(n) = args.shift_by {
            Target::Shift(n)
        } else if let Some(datetime) = &args.to_datetime {
            Target::Time(
                parse_datetime(datetime)
                    .map_err(|e| Failure::new(format!("--to-datetime {datetime:?}: {e}")))?,
            )
        } else {
            return Err(Failure::new(
                "give one of --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime",
            ));
        })
    }
}

/// `--topic` values: topic → the partitions named (`None`: all of them).
fn parse_topics(specs: &[String]) -> Result<BTreeMap<String, Option<BTreeSet<i32>>>, Failure> {
    let mut topics: BTreeMap<String, Option<BTreeSet<i32>>> = BTreeMap::new();
    for spec in specs {
        let (topic, partitions) = match spec.split_once(':') {
            None => (spec.as_str(), None),
            Some((topic, list)) => {
                let parsed: Result<BTreeSet<i32>, _> =
                    list.split(',').map(|p| p.trim().parse::<i32>()).collect();
                match parsed {
                    Ok(set) if set.iter().all(|&p| p >= 0) => (topic, Some(set)),
                    _ => {
                        return Err(Failure::new(format!(
                            "--topic {spec:?}: expected TOPIC or TOPIC:P,P,… (partition numbers)"
                        )))
                    }
                }
            }
        };
        if topic.is_empty() {
            return Err(Failure::new(format!("--topic {spec:?}: no topic name")));
        }
        let entry = topics
            .entry(topic.to_string())
            .or_insert(Some(BTreeSet::new()));
        match (entry.as_mut(), partitions) {
            (Some(set), Some(more)) => set.extend(more),
            (_, None) => *entry = None,
            (None, Some(_)) => {}
        }
    }
    Ok(topics)
}

fn group_reset_offsets(args: &ResetOffsets) -> Result<i32, Failure> {
    let group = args.group.as_str();
    let target = Target::of(args)?;
    let topics = parse_topics(&args.topics)?;
    let mut session = Session::open(&args.connection)?;
    let state = read_group(&mut session, group)?;
    if state.state != "Empty" && state.state != "Dead" {
        return Err(Failure::new(format!(
            "cannot reset the offsets of group {group}: it is {} with {} member(s); offsets \
             can only be reset while the group is inactive (stop its consumers first)",
            state.state,
            state.members.len()
        )));
    }

    // The partitions to move, and their leaders.
    let names: Vec<&str> = if args.all_topics {
        let names: BTreeSet<&str> = state.committed.keys().map(|(t, _)| t.as_str()).collect();
        names.into_iter().collect()
    } else {
        topics.keys().map(String::as_str).collect()
    };
    if names.is_empty() {
        return Err(Failure::new(format!(
            "group {group} has no committed offsets: name the topics with --topic"
        )));
    }
    let (all, errors) = session.leaders(&names)?;
    if let Some((topic, &code)) = errors.iter().next() {
        return Err(Failure::new(format!(
            "topic {topic}: {}{}",
            describe_error(code, None),
            topic_hint(code)
        )));
    }
    let mut leaders = Leaders::new();
    if args.all_topics {
        for key in state.committed.keys() {
            if let Some(&leader) = all.get(key) {
                leaders.insert(key.clone(), leader);
            }
        }
    } else {
        for (topic, partitions) in &topics {
            let mut found = false;
            for ((t, p), &leader) in all.range((topic.clone(), i32::MIN)..) {
                if t != topic {
                    break;
                }
                found = true;
                if partitions.as_ref().is_none_or(|set| set.contains(p)) {
                    leaders.insert((t.clone(), *p), leader);
                }
            }
            if !found {
                return Err(Failure::new(format!("topic {topic}: not in the metadata")));
            }
            for p in partitions.iter().flatten() {
                if !leaders.contains_key(&(topic.clone(), *p)) {
                    return Err(Failure::new(format!("topic {topic} has no partition {p}")));
                }
            }
        }
    }

    // On a terminal, where a reset of many partitions is.
    let mut progress = Progress::on_terminal(false);
    progress.show(&format!(
        "group {group}: reading the offsets of {} partition(s)",
        leaders.len()
    ));
    // Kafka's rules: every new offset within [log start, log end]; a time with no record
    // at or after it moves to the log end.
    let starts = session.list_offsets(&leaders, -2);
    let ends = session.list_offsets(&leaders, -1);
    let at_time = match target {
        Target::Time(ms) => session.list_offsets(&leaders, ms),
        _ => BTreeMap::new(),
    };
    let offset_of = |offsets: &BTreeMap<(String, i32), Result<i64, String>>,
                     key: &(String, i32)|
     -> Result<i64, Failure> {
        match offsets.get(key) {
            Some(Ok(offset)) => Ok(*offset),
            Some(Err(e)) => Err(Failure::new(format!(
                "{}/{}: cannot read its offsets: {e}",
                key.0, key.1
            ))),
            None => Err(Failure::new(format!("{}/{}: no offsets", key.0, key.1))),
        }
    };
    let mut plan: Vec<((String, i32), Option<i64>, i64)> = Vec::new();
    for key in leaders.keys() {
        let (start, end) = (offset_of(&starts, key)?, offset_of(&ends, key)?);
        let current = state.committed.get(key).copied();
        let wanted = match target {
            Target::Earliest => start,
            Target::Latest => end,
            Target::Offset(offset) => offset,
            Target::Shift(n) => current
                .ok_or_else(|| {
                    Failure::new(format!(
                        "cannot shift {}/{}: group {group} has no committed offset there",
                        key.0, key.1
                    ))
                })?
                .saturating_add(n),
            Target::Time(_) => match offset_of(&at_time, key)? {
                -1 => end,
                offset => offset,
            },
        };
        plan.push((key.clone(), current, wanted.min(end).max(start)));
    }

    if args.execute {
        let total = plan.len() as u64;
        let mut done = 0;
        for chunk in plan.chunks(COMMIT_CHUNK) {
            progress.show(&format!(
                "group {group}: {}",
                progress::counted(done, Some(total), "offsets committed")
            ));
            commit(&mut session, group, chunk).map_err(|failure| match done {
                0 => failure,
                _ => Failure::new(format!(
                    "{}; {done} of {total} offset(s) committed before",
                    failure.message
                )),
            })?;
            done += chunk.len() as u64;
        }
    }
    progress.clear();
    match args.connection.format {
        Format::Json => print_json(&json!({
            "group": group,
            "executed": args.execute,
            "partitions": plan.iter().map(|((t, p), current, new)| json!({
                "topic": t, "partition": p, "current_offset": current, "new_offset": new,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            print_table(
                &[
                    "GROUP",
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "NEW-OFFSET",
                ],
                plan.iter()
                    .map(|((t, p), current, new)| {
                        vec![
                            group.to_string(),
                            t.clone(),
                            p.to_string(),
                            current.map_or_else(|| "-".into(), |c| c.to_string()),
                            new.to_string(),
                        ]
                    })
                    .collect(),
            );
            if args.execute {
                println!("committed {} offset(s) of group {group}", plan.len());
            } else {
                println!("dry run: nothing committed (--execute commits these offsets)");
            }
        }
    }
    Ok(0)
}

/// Partitions per OffsetCommit of `reset-offsets --execute`: a reset of more is committed
/// in several requests, its progress shown between them.
const COMMIT_CHUNK: usize = 500;

/// Commits `plan` for `group` as an admin does (OffsetCommit with generation -1 and no
/// member id, which the coordinator accepts only while the group has no members).
pub(super) fn commit(
    session: &mut Session,
    group: &str,
    plan: &[((String, i32), Option<i64>, i64)],
) -> Result<(), Failure> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), _, offset) in plan {
        by_topic.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(text(""))),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(text(""))
        .with_retention_time_ms(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(text(topic)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let conn = session.coordinator(group)?;
    let version = conn.version(ApiKey::OffsetCommit, 2, 8)?;
    let response: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, version, &request)?;
    let mut failures = Vec::new();
    for t in &response.topics {
        for p in t.partitions.iter().filter(|p| p.error_code != 0) {
            failures.push(format!(
                "{}/{}: {}",
                t.name.0,
                p.partition_index,
                describe_error(p.error_code, None)
            ));
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    let hint = if response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| matches!(p.error_code, 22 | 25 | 79))
    {
        " (a consumer joined the group meanwhile; stop it and try again)"
    } else {
        ""
    };
    Err(Failure::new(format!(
        "cannot commit the offsets of group {group}: {}{hint}",
        failures.join(", ")
    )))
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.sss][Z|±hh:mm]`, as
/// kafka-consumer-groups.sh's --to-datetime reads it: without a zone, local time.
fn parse_datetime(s: &str) -> Result<i64, String> {
    const FORMAT: &str = "expected YYYY-MM-DDTHH:MM:SS[.sss][Z|+hh:mm|-hh:mm]";
    let (date, time) = s.split_once('T').ok_or(FORMAT)?;
    let number = |v: &str, digits: usize| -> Result<i64, String> {
        if v.len() == digits && v.bytes().all(|b| b.is_ascii_digit()) {
            Ok(v.parse().expect("digits"))
        } else {
            Err(FORMAT.to_string())
        }
    };
    let mut parts = date.split('-');
    let (year, month, day) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d), None) => (number(y, 4)?, number(m, 2)?, number(d, 2)?),
        _ => return Err(FORMAT.into()),
    };
    // The zone: Z, ±hh:mm or ±hhmm at the end; none: local time.
    let (clock, zone_minutes) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, Some(0))
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = zone[1..].replace(':', "");
        if zone.len() != 4 {
            return Err(FORMAT.into());
        }
        let (h, m) = (number(&zone[..2], 2)?, number(&zone[2..], 2)?);
        (clock, Some(sign * (h * 60 + m)))
    } else {
        (time, None)
    };
    let (clock, millis) = match clock.split_once('.') {
        None => (clock, 0),
        Some((clock, fraction)) => {
            if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FORMAT.into());
            }
            let padded = format!("{:0<3}", &fraction[..fraction.len().min(3)]);
            (clock, padded.parse::<i64>().expect("digits"))
        }
    };
    let mut parts = clock.split(':');
    let (hour, minute, second) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(m), Some(s), None) => (number(h, 2)?, number(m, 2)?, number(s, 2)?),
        _ => return Err(FORMAT.into()),
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return Err(format!("no month {month}")),
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return Err(format!("{s} is not a valid date and time"));
    }
    let seconds = match zone_minutes {
        Some(zone) => {
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
                - zone * 60
        }
        None => local_seconds(year, month, day, hour, minute, second)
            .ok_or_else(|| format!("{s} is not a valid local time"))?,
    };
    Ok(seconds * 1000 + millis)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of a local date and time (the process's time zone, `TZ`).
fn local_seconds(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Option<i64> {
    // SAFETY: `tm` is a plain C struct, all zeroes is a valid value, and mktime only reads
    // and normalizes the struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (year - 1900) as libc::c_int;
    tm.tm_mon = (month - 1) as libc::c_int;
    tm.tm_mday = day as libc::c_int;
    tm.tm_hour = hour as libc::c_int;
    tm.tm_min = minute as libc::c_int;
    tm.tm_sec = second as libc::c_int;
    tm.tm_isdst = -1;
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_read_as_kafka_reads_them() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_datetime("2026-12-07T10:00:00.000Z"),
            Ok(1_796_637_600_000)
        );
        assert_eq!(
            parse_datetime("2026-12-07T10:00:00.5+01:00"),
            Ok(1_796_637_600_000 - 3_600_000 + 500)
        );
        assert_eq!(
            parse_datetime("2026-12-07T10:00:00-0230"),
            Ok(1_796_637_600_000 + 9_000_000)
        );
        assert_eq!(
            parse_datetime("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000)
        );
        for bad in [
            "2026-12-07",
            "2026-12-07 10:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-12-07T24:00:00Z",
            "2026-12-07T10:00Z",
            "2026-12-07T10:00:00+1",
            "2026-12-07T10:00:00.Z",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
        // Without a zone: the local time of the process.
        assert!(parse_datetime("2026-12-07T10:00:00").is_ok());
    }

    #[test]
    fn topic_specs() {
        let parsed =
            parse_topics(&["a:0,2".into(), "b".into(), "a:1".into(), "b:3".into()]).expect("valid");
        assert_eq!(parsed["a"], Some([0, 1, 2].into()));
        assert_eq!(parsed["b"], None);
        assert!(parse_topics(&["a:x".into()]).is_err());
        assert!(parse_topics(&["a:-1".into()]).is_err());
        assert!(parse_topics(&[":1".into()]).is_err());
    }
}
