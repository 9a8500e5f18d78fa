//! Authorization: Kafka's `StandardAuthorizer` model. ACL bindings (resource pattern,
//! principal, host, operation, ALLOW/DENY) on topics, groups, the cluster and
//! transactional ids; super users pass every check; any matching DENY wins over any
//! ALLOW; READ, WRITE, DELETE and ALTER imply DESCRIBE, ALTER_CONFIGS implies
//! DESCRIBE_CONFIGS; a resource no ACL names is denied unless
//! `--allow-everyone-if-no-acl-found`.
//!
//! The bindings live in `DATA_DIR/acls.json`, written atomically (temporary file, fsync,
//! rename, fsync of the directory) by the shard that serves CreateAcls/DeleteAcls. The
//! node's [`AclStore`] holds the current table behind a mutex that only writers and a
//! shard seeing a new generation take; each shard checks requests against its own
//! snapshot ([`ShardAcls`]), refreshed when the store's generation moves (one atomic
//! load per check). The table is per node: a cluster's nodes do not share it
//! (docs/security.md).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The file's name in the data directory.
pub const ACLS_FILE: &str = "acls.json";

/// Most ACL bindings a node keeps: CreateAcls beyond it is refused. The table is filled
/// from client input and scanned by checks, so it is bounded.
pub const MAX_ACLS: usize = 10_000;

/// Kafka's `ResourceType` codes.
pub mod resource {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
}

/// Kafka's `PatternType` codes.
pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's `AclOperation` codes.
pub mod op {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
}

/// Kafka's `AclPermissionType` codes.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The literal resource name that matches every resource of its type.
pub const WILDCARD: &str = "*";
/// The principal that matches every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// One ACL binding, as CreateAcls carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

impl AclBinding {
    /// Why the binding cannot be stored, as Kafka refuses it (INVALID_REQUEST).
    pub fn invalid(&self) -> Option<String> {
        if !matches!(
            self.resource_type,
            resource::TOPIC | resource::GROUP | resource::CLUSTER | resource::TRANSACTIONAL_ID
        ) {
            return Some(format!(
                "resource type {} is not TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID",
                self.resource_type
            ));
        }
        if !matches!(self.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
            return Some(format!(
                "pattern type {} is not LITERAL or PREFIXED",
                self.pattern_type
            ));
        }
        if self.resource_name.is_empty() {
            return Some("the resource name is empty".into());
        }
        if self.resource_type == resource::CLUSTER && self.resource_name != CLUSTER_NAME {
            return Some(format!("the cluster resource is named {CLUSTER_NAME}"));
        }
        if !(op::ALL..=op::IDEMPOTENT_WRITE).contains(&self.operation) {
            return Some(format!("operation {} is not valid", self.operation));
        }
        if !matches!(self.permission, permission::ALLOW | permission::DENY) {
            return Some(format!(
                "permission type {} is not ALLOW or DENY",
                self.permission
            ));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Some(format!(
                    "principal {:?} is not TYPE:NAME (User:alice)",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() {
            return Some("the host is empty (\"*\" is every host)".into());
        }
        None
    }

    /// Whether the binding names `name` of its resource type.
    fn covers(&self, name: &str) -> bool {
        match self.pattern_type {
            pattern::LITERAL => self.resource_name == name || self.resource_name == WILDCARD,
            pattern::PREFIXED => name.starts_with(&self.resource_name),
            _ => false,
        }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == WILDCARD_PRINCIPAL)
            && (self.host == WILDCARD || self.host == host)
    }
}

/// A DescribeAcls/DeleteAcls filter.
#[derive(Clone, Debug)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    /// Why the filter matches nothing sensible (INVALID_REQUEST), as Kafka checks it.
    pub fn invalid(&self) -> Option<String> {
        if !(resource::ANY..=resource::TRANSACTIONAL_ID + 1).contains(&self.resource_type) {
            return Some(format!("resource type {} is unknown", self.resource_type));
        }
        if !(pattern::ANY..=pattern::PREFIXED).contains(&self.pattern_type) {
            return Some(format!("pattern type {} is unknown", self.pattern_type));
        }
        if !(op::ANY..=op::IDEMPOTENT_WRITE).contains(&self.operation) {
            return Some(format!("operation {} is unknown", self.operation));
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission) {
            return Some(format!("permission type {} is unknown", self.permission));
        }
        None
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        let name_ok = match (&self.resource_name, self.pattern_type) {
            (_, pattern::MATCH) => match &self.resource_name {
                None => true,
                Some(name) => match b.pattern_type {
                    pattern::LITERAL => b.resource_name == *name || b.resource_name == WILDCARD,
                    pattern::PREFIXED => name.starts_with(&b.resource_name),
                    _ => false,
                },
            },
            (None, p) => p == pattern::ANY || p == b.pattern_type,
            (Some(name), p) => {
                (p == pattern::ANY || p == b.pattern_type) && b.resource_name == *name
            }
        };
        name_ok
            && (self.resource_type == resource::ANY || self.resource_type == b.resource_type)
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == op::ANY || self.operation == b.operation)
            && (self.permission == permission::ANY || self.permission == b.permission)
    }
}

/// The bindings of a node, indexed for checks.
#[derive(Default, Debug)]
pub struct AclTable {
    bindings: Vec<AclBinding>,
    /// Literal bindings by (resource type, name), `*` included.
    literal: HashMap<(i8, String), Vec<usize>>,
    /// Prefixed bindings by resource type.
    prefixed: HashMap<i8, Vec<usize>>,
}

impl AclTable {
    pub fn new(mut bindings: Vec<AclBinding>) -> AclTable {
        bindings.sort();
        bindings.dedup();
        let mut literal: HashMap<(i8, String), Vec<usize>> = HashMap::new();
        let mut prefixed: HashMap<i8, Vec<usize>> = HashMap::new();
        for (i, b) in bindings.iter().enumerate() {
            match b.pattern_type {
                pattern::PREFIXED => prefixed.entry(b.resource_type).or_default().push(i),
                _ => literal
                    .entry((b.resource_type, b.resource_name.clone()))
                    .or_default()
                    .push(i),
            }
        }
        AclTable {
            bindings,
            literal,
            prefixed,
        }
    }

    pub fn bindings(&self) -> &[AclBinding] {
        &self.bindings
    }

    /// Every binding that names `name` of resource type `rtype`.
    fn covering<'a>(&'a self, rtype: i8, name: &'a str) -> impl Iterator<Item = &'a AclBinding> {
        let exact = self.literal.get(&(rtype, name.to_string()));
        let wildcard = if name == WILDCARD {
            None
        } else {
            self.literal.get(&(rtype, WILDCARD.to_string()))
        };
        let prefixed = self.prefixed.get(&rtype).into_iter().flatten();
        exact
            .into_iter()
            .flatten()
            .chain(wildcard.into_iter().flatten())
            .map(|&i| &self.bindings[i])
            .chain(
                prefixed
                    .map(|&i| &self.bindings[i])
                    .filter(move |b| b.covers(name)),
            )
    }
}

/// Whether an ALLOW of `granted` allows `wanted` (Kafka's implied operations).
fn allow_implies(granted: i8, wanted: i8) -> bool {
    granted == wanted
        || granted == op::ALL
        || (wanted == op::DESCRIBE
            && matches!(granted, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (wanted == op::DESCRIBE_CONFIGS && granted == op::ALTER_CONFIGS)
}

/// The authorizer's settings.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
}

impl Policy {
    /// `User:a;User:b` (Kafka's `super.users`).
    pub fn parse_super_users(list: &str) -> Result<Vec<String>, String> {
        list.split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once(':') {
                Some((k, n)) if !k.is_empty() && !n.is_empty() => Ok(p.to_string()),
                _ => Err(format!(
                    "super user {p:?} is not TYPE:NAME (User:admin); separate them with ;"
                )),
            })
            .collect()
    }

    pub fn is_super(&self, principal: &str) -> bool {
        self.super_users.iter().any(|s| s == principal)
    }
}

/// Kafka's answer for `principal` at `host` doing `operation` on a resource.
pub fn authorize(
    table: &AclTable,
    policy: &Policy,
    principal: &str,
    host: &str,
    operation: i8,
    rtype: i8,
    name: &str,
) -> bool {
    if policy.is_super(principal) {
        return true;
    }
    let mut any = false;
    let mut allowed = false;
    for b in table.covering(rtype, name) {
        any = true;
        if !b.applies_to(principal, host) {
            continue;
        }
        if b.permission == permission::DENY && (b.operation == operation || b.operation == op::ALL)
        {
            return false;
        }
        if b.permission == permission::ALLOW && allow_implies(b.operation, operation) {
            allowed = true;
        }
    }
    allowed || (!any && policy.allow_if_no_acl)
}

/// Kafka's `authorizeByResourceType`: whether `principal` may do `operation` on at least
/// one resource of `rtype` (an ALLOW not shadowed by a DENY of the same or a wider
/// pattern). What lets an idempotent producer with WRITE on some topic get an id.
pub fn authorize_any(
    table: &AclTable,
    policy: &Policy,
    principal: &str,
    host: &str,
    operation: i8,
    rtype: i8,
) -> bool {
    if policy.is_super(principal) {
        return true;
    }
    let applies = |b: &&AclBinding| b.resource_type == rtype && b.applies_to(principal, host);
    let denies: Vec<&AclBinding> = table
        .bindings
        .iter()
        .filter(applies)
        .filter(|b| {
            b.permission == permission::DENY && (b.operation == operation || b.operation == op::ALL)
        })
        .collect();
    let shadowed = |a: &AclBinding| {
        denies.iter().any(|d| match d.pattern_type {
            pattern::LITERAL => {
                d.resource_name == WILDCARD
                    || (a.pattern_type == pattern::LITERAL && a.resource_name == d.resource_name)
            }
            _ => a.resource_name.starts_with(&d.resource_name),
        })
    };
    let granted = table
        .bindings
        .iter()
        .filter(applies)
        .filter(|b| {
            b.permission == permission::ALLOW
                && (b.operation == operation || b.operation == op::ALL)
        })
        .any(|b| !shadowed(b));
    if granted {
        return true;
    }
    policy.allow_if_no_acl && !table.bindings.iter().any(|b| b.resource_type == rtype)
}

/// The node's ACLs: the table in force, its file and a generation shards compare with
/// their copy's.
pub struct AclStore {
    data_dir: PathBuf,
    table: Mutex<Arc<AclTable>>,
    generation: AtomicU64,
}

/// The outcome of one creation or one deletion filter.
pub type Outcome<T> = Result<T, (i16, String)>;

impl AclStore {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(ACLS_FILE)
    }

    /// Reads `DATA_DIR/acls.json` (no file: no ACLs).
    pub fn open(data_dir: &Path) -> Result<AclStore, String> {
        let bindings = load(data_dir)?;
        Ok(AclStore {
            data_dir: data_dir.to_path_buf(),
            table: Mutex::new(Arc::new(AclTable::new(bindings))),
            generation: AtomicU64::new(1),
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<AclTable> {
        self.table.lock().expect("acl table lock").clone()
    }

    /// Adds bindings (one outcome per binding, in order) and saves the file when any was
    /// new. A binding already present succeeds without a copy, as in Kafka.
    pub fn create(&self, wanted: Vec<AclBinding>) -> Vec<Outcome<()>> {
        let mut table = self.table.lock().expect("acl table lock");
        let mut bindings = table.bindings.clone();
        let mut outcomes = Vec::with_capacity(wanted.len());
        let mut added = Vec::new();
        for b in wanted {
            if let Some(reason) = b.invalid() {
                outcomes.push(Err((crate::protocol::errors::INVALID_REQUEST, reason)));
                continue;
            }
            if bindings.contains(&b) {
                outcomes.push(Ok(()));
                continue;
            }
            if bindings.len() >= MAX_ACLS {
                outcomes.push(Err((
                    crate::protocol::errors::INVALID_REQUEST,
                    format!("this node holds {MAX_ACLS} ACLs, its limit"),
                )));
                continue;
            }
            added.push(outcomes.len());
            bindings.push(b);
            outcomes.push(Ok(()));
        }
        if !added.is_empty() {
            if let Err(err) = save(&self.data_dir, &bindings) {
                tracing::error!(%err, "ACLs not created");
                for i in added {
                    outcomes[i] = Err((crate::protocol::errors::UNKNOWN_SERVER_ERROR, err.clone()));
                }
                return outcomes;
            }
            *table = Arc::new(AclTable::new(bindings));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        outcomes
    }

    /// Removes the bindings each filter matches; per filter, the bindings it removed.
    pub fn delete(&self, filters: &[AclFilter]) -> Vec<Outcome<Vec<AclBinding>>> {
        let mut table = self.table.lock().expect("acl table lock");
        let mut removed = vec![false; table.bindings.len()];
        let mut outcomes = Vec::with_capacity(filters.len());
        for f in filters {
            if let Some(reason) = f.invalid() {
                outcomes.push(Err((crate::protocol::errors::INVALID_REQUEST, reason)));
                continue;
            }
            let mut matched = Vec::new();
            for (i, b) in table.bindings.iter().enumerate() {
                if f.matches(b) {
                    removed[i] = true;
                    matched.push(b.clone());
                }
            }
            outcomes.push(Ok(matched));
        }
        if removed.iter().any(|r| *r) {
            let kept: Vec<AclBinding> = table
                .bindings
                .iter()
                .zip(&removed)
                .filter(|(_, r)| !**r)
                .map(|(b, _)| b.clone())
                .collect();
            if let Err(err) = save(&self.data_dir, &kept) {
                tracing::error!(%err, "ACLs not deleted");
                return filters
                    .iter()
                    .map(|_| Err((crate::protocol::errors::UNKNOWN_SERVER_ERROR, err.clone())))
                    .collect();
            }
            *table = Arc::new(AclTable::new(kept));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        outcomes
    }
}

fn load(data_dir: &Path) -> Result<Vec<AclBinding>, String> {
    let path = AclStore::path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<AclFile>(&bytes)
            .map(|f| f.acls)
            .map_err(|e| format!("{} is not an ACL file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[derive(Serialize, Deserialize)]
struct AclFile {
    acls: Vec<AclBinding>,
}

/// Writes the file durably: a crash leaves the old file or the new one, whole.
fn save(data_dir: &Path, bindings: &[AclBinding]) -> Result<(), String> {
    let path = AclStore::path(data_dir);
    let tmp = data_dir.join(format!("{ACLS_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(&AclFile {
        acls: bindings.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A shard's authorizer: off (no `--authorizer`), or the policy and the shard's copy of
/// the node's table.
#[derive(Default)]
pub struct ShardAcls {
    inner: Option<Enabled>,
}

struct Enabled {
    store: Arc<AclStore>,
    policy: Policy,
    copy: RefCell<(u64, Arc<AclTable>)>,
}

impl ShardAcls {
    pub fn new(store: Option<Arc<AclStore>>, policy: Policy) -> ShardAcls {
        ShardAcls {
            inner: store.map(|store| Enabled {
                copy: RefCell::new((store.generation(), store.current())),
                store,
                policy,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether checks apply to `principal`: an authorizer is on and it is no super user.
    pub fn checks(&self, principal: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|e| !e.policy.is_super(principal))
    }

    pub fn store(&self) -> Option<&Arc<AclStore>> {
        self.inner.as_ref().map(|e| &e.store)
    }

    /// The table the shard checks against (refreshed if the node's changed).
    fn table(e: &Enabled) -> Arc<AclTable> {
        let generation = e.store.generation();
        let mut copy = e.copy.borrow_mut();
        if copy.0 != generation {
            *copy = (generation, e.store.current());
        }
        copy.1.clone()
    }

    /// Whether `principal` at `host` may do `operation` on `name` of `rtype`; always
    /// without an authorizer.
    pub fn allowed(
        &self,
        principal: &str,
        host: &str,
        operation: i8,
        rtype: i8,
        name: &str,
    ) -> bool {
        match &self.inner {
            None => true,
            Some(e) => {
                if e.policy.is_super(principal) {
                    return true;
                }
                authorize(
                    &Self::table(e),
                    &e.policy,
                    principal,
                    host,
                    operation,
                    rtype,
                    name,
                )
            }
        }
    }

    /// Kafka's `authorizeByResourceType`.
    pub fn allowed_any(&self, principal: &str, host: &str, operation: i8, rtype: i8) -> bool {
        match &self.inner {
            None => true,
            Some(e) => authorize_any(
                &Self::table(e),
                &e.policy,
                principal,
                host,
                operation,
                rtype,
            ),
        }
    }

    /// The bits of `operations` the principal may do on the resource (Kafka's
    /// `authorized_operations`).
    pub fn operations(
        &self,
        principal: &str,
        host: &str,
        operations: &[i8],
        rtype: i8,
        name: &str,
    ) -> i32 {
        operations
            .iter()
            .filter(|&&o| self.allowed(principal, host, o, rtype, name))
            .fold(0, |bits, &o| bits | (1 << o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(rtype: i8, name: &str, pat: i8, principal: &str, operation: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: rtype,
            resource_name: name.into(),
            pattern_type: pat,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission: perm,
        }
    }

    fn check(table: &AclTable, policy: &Policy, who: &str, o: i8, name: &str) -> bool {
        authorize(table, policy, who, "10.0.0.1", o, resource::TOPIC, name)
    }

    #[test]
    fn kafka_rules() {
        use permission::*;
        use resource::TOPIC;
        let table = AclTable::new(vec![
            b(
                TOPIC,
                "orders",
                pattern::LITERAL,
                "User:bob",
                op::READ,
                ALLOW,
            ),
            b(
                TOPIC,
                "pay-",
                pattern::PREFIXED,
                "User:bob",
                op::WRITE,
                ALLOW,
            ),
            b(
                TOPIC,
                "pay-secret",
                pattern::LITERAL,
                "User:bob",
                op::ALL,
                DENY,
            ),
            b(TOPIC, "*", pattern::LITERAL, "User:*", op::DESCRIBE, ALLOW),
            b(
                TOPIC,
                "hosted",
                pattern::LITERAL,
                "User:bob",
                op::READ,
                ALLOW,
            ),
        ]);
        let mut hosted = table.bindings.clone();
        hosted
            .iter_mut()
            .find(|b| b.resource_name == "hosted")
            .unwrap()
            .host = "10.0.0.2".into();
        let policy = Policy {
            super_users: vec!["User:admin".into()],
            allow_if_no_acl: false,
        };
        assert!(check(&table, &policy, "User:bob", op::READ, "orders"));
        assert!(check(&table, &policy, "User:bob", op::DESCRIBE, "orders"));
        assert!(!check(&table, &policy, "User:bob", op::WRITE, "orders"));
        assert!(!check(&table, &policy, "User:eve", op::READ, "orders"));
        assert!(check(&table, &policy, "User:eve", op::DESCRIBE, "orders"));
        assert!(check(&table, &policy, "User:bob", op::WRITE, "pay-1"));
        assert!(!check(&table, &policy, "User:bob", op::WRITE, "pay-secret"));
        assert!(!check(
            &table,
            &policy,
            "User:bob",
            op::DESCRIBE,
            "pay-secret"
        ));
        assert!(!check(&table, &policy, "User:bob", op::WRITE, "other"));
        assert!(check(&table, &policy, "User:admin", op::DELETE, "anything"));
        let hosted = AclTable::new(hosted);
        assert!(!check(&hosted, &policy, "User:bob", op::READ, "hosted"));
        // No ACL names the topic: denied, unless allow.everyone.if.no.acl.found.
        let empty = AclTable::new(vec![b(
            resource::GROUP,
            "g",
            pattern::LITERAL,
            "User:bob",
            op::READ,
            ALLOW,
        )]);
        assert!(!check(&empty, &policy, "User:bob", op::READ, "t"));
        let open = Policy {
            allow_if_no_acl: true,
            ..policy.clone()
        };
        assert!(check(&empty, &open, "User:bob", op::READ, "t"));
        assert!(!check(&table, &open, "User:eve", op::READ, "orders"));
        // authorizeByResourceType.
        assert!(authorize_any(
            &table,
            &policy,
            "User:bob",
            "h",
            op::WRITE,
            TOPIC
        ));
        assert!(!authorize_any(
            &table,
            &policy,
            "User:eve",
            "h",
            op::WRITE,
            TOPIC
        ));
        let shadowed = AclTable::new(vec![
            b(TOPIC, "a-", pattern::PREFIXED, "User:bob", op::WRITE, ALLOW),
            b(TOPIC, "a", pattern::PREFIXED, "User:bob", op::WRITE, DENY),
        ]);
        assert!(!authorize_any(
            &shadowed,
            &policy,
            "User:bob",
            "h",
            op::WRITE,
            TOPIC
        ));
    }

    #[test]
    fn filters_and_store() {
        use permission::*;
        use resource::TOPIC;
        let dir = tempfile::tempdir().unwrap();
        let store = AclStore::open(dir.path()).unwrap();
        let out = store.create(vec![
            b(TOPIC, "t", pattern::LITERAL, "User:bob", op::READ, ALLOW),
            b(TOPIC, "t-", pattern::PREFIXED, "User:bob", op::READ, ALLOW),
            b(TOPIC, "t", pattern::LITERAL, "bob", op::READ, ALLOW),
            b(TOPIC, "t", pattern::MATCH, "User:bob", op::READ, ALLOW),
        ]);
        assert!(out[0].is_ok() && out[1].is_ok() && out[2].is_err() && out[3].is_err());
        let g = store.generation();
        // The same binding again: no change.
        assert!(store.create(vec![b(
            TOPIC,
            "t",
            pattern::LITERAL,
            "User:bob",
            op::READ,
            ALLOW
        )])[0]
            .is_ok());
        assert_eq!(store.generation(), g);
        let reopened = AclStore::open(dir.path()).unwrap();
        assert_eq!(reopened.current().bindings().len(), 2);
        let matching = |name: &str| AclFilter {
            resource_type: resource::ANY,
            resource_name: Some(name.into()),
            pattern_type: pattern::MATCH,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        let all = reopened.current();
        assert_eq!(
            all.bindings()
                .iter()
                .filter(|x| matching("t-1").matches(x))
                .count(),
            1
        );
        assert_eq!(
            all.bindings()
                .iter()
                .filter(|x| matching("t").matches(x))
                .count(),
            1
        );
        let deleted = reopened.delete(&[AclFilter {
            pattern_type: pattern::ANY,
            resource_name: None,
            ..matching("")
        }]);
        assert_eq!(deleted[0].as_ref().unwrap().len(), 2);
        assert!(AclStore::open(dir.path())
            .unwrap()
            .current()
            .bindings()
            .is_empty());
    }
}
