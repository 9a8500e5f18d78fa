//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the SCRAM users
//! of `DATA_DIR/users.json`, the store `strand user` writes and SASL logins read, managed
//! over the wire as `kafka-configs.sh --entity-type users` and the admin clients'
//! `describe_user_scram_credentials` / `alter_user_scram_credentials` do. Validation and
//! error codes are Kafka's (`ZkAdminManager`, `ScramControlManager`). The client sends the
//! SaltedPassword, never the password; the broker keeps salt, StoredKey, ServerKey and
//! the iteration count. Changes are written under the store's lock, atomically, off the
//! shard's thread; every shard sees them at its next login. On a cluster the store is
//! each node's own.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{s, Ctx, Response};
use crate::protocol::errors::{NONE, UNSUPPORTED_SASL_MECHANISM};
use crate::security::scram::{Credential, Hash, ITERATIONS_MAX, ITERATIONS_MIN};
use crate::security::users::Users;
use crate::shard::Shard;

const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;
const UNKNOWN_SERVER_ERROR: i16 = -1;

/// Kafka's `AclOperation` codes of the two checks.
const ALTER: i32 = 7;
const DESCRIBE: i32 = 8;

/// Kafka's principal of a connection that did not authenticate.
const ANONYMOUS: &str = "User:ANONYMOUS";

/// Whether the request's principal may do `operation` (ALTER or DESCRIBE, Kafka's
/// `AclOperation` code) on the CLUSTER resource, as Kafka requires of these two APIs:
/// `Err(message)` answers CLUSTER_AUTHORIZATION_FAILED. With `--authorizer` the ACLs
/// decide (super users pass); without one, credentials are managed by any connection
/// that authenticated (SASL, or a client certificate), never by an anonymous one.
pub(crate) fn may_manage_credentials(
    shard: &Shard,
    ctx: &Ctx,
    operation: i32,
) -> Result<(), String> {
    if shard.acls.enabled() {
        return if super::acls::cluster(shard, ctx, operation as i8) {
            Ok(())
        } else {
            Err(format!(
                "{} may not {} on the cluster",
                ctx.principal,
                if operation == ALTER {
                    "ALTER"
                } else {
                    "DESCRIBE"
                }
            ))
        };
    }
    if &*ctx.principal == ANONYMOUS {
        return Err(
            "SCRAM credentials are managed only over an authenticated connection (SASL, or mTLS)"
                .into(),
        );
    }
    Ok(())
}

/// Kafka's `ScramMechanism` type codes: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512 (0 is UNKNOWN).
fn hash_of(mechanism: i8) -> Option<Hash> {
    match mechanism {
        1 => Some(Hash::Sha256),
        2 => Some(Hash::Sha512),
        _ => None,
    }
}

fn code_of(mechanism: &str) -> Option<i8> {
    match Hash::from_mechanism(mechanism)? {
        Hash::Sha256 => Some(1),
        Hash::Sha512 => Some(2),
    }
}

pub async fn describe(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: DescribeUserScramCredentialsRequest,
) -> Response {
    let mut response = DescribeUserScramCredentialsResponse::default();
    let named: Vec<String> = request
        .users
        .unwrap_or_default()
        .iter()
        .map(|u| u.name.to_string())
        .collect();
    if let Err(why) = may_manage_credentials(shard, ctx, DESCRIBE) {
        if named.is_empty() {
            // Kafka's answer: the request-level error.
            response.error_code = CLUSTER_AUTHORIZATION_FAILED;
            response.error_message = Some(s(why));
        } else {
            // Kafka answers a request-level error here too, but librdkafka (up to 2.16 at
            // least) crashes on reading one when users are named; each named user gets
            // the error instead, which every client reports the same way.
            let mut answered = BTreeSet::new();
            for name in named.iter().filter(|n| answered.insert(n.as_str())) {
                response.results.push(
                    DescribeUserScramCredentialsResult::default()
                        .with_user(s(name.clone()))
                        .with_error_code(CLUSTER_AUTHORIZATION_FAILED)
                        .with_error_message(Some(s(why.clone()))),
                );
            }
        }
        return ctx.respond(&response);
    }
    let data_dir = shard.config.data_dir.clone();
    let users = match glommio::executor()
        .spawn_blocking(move || Users::load(&data_dir))
        .await
    {
        Ok(users) => users,
        Err(err) => {
            response.error_code = UNKNOWN_SERVER_ERROR;
            response.error_message = Some(s(err));
            return ctx.respond(&response);
        }
    };
    let infos = |creds: &BTreeMap<String, Credential>| -> Vec<CredentialInfo> {
        creds
            .iter()
            .filter_map(|(mechanism, c)| {
                Some(
                    CredentialInfo::default()
                        .with_mechanism(code_of(mechanism)?)
                        .with_iterations(c.iterations as i32),
                )
            })
            .collect()
    };
    if named.is_empty() {
        // All users that have a credential.
        for (name, creds) in &users.users {
            response.results.push(
                DescribeUserScramCredentialsResult::default()
                    .with_user(s(name.clone()))
                    .with_credential_infos(infos(creds)),
            );
        }
        return ctx.respond(&response);
    }
    let mut seen = BTreeMap::<&str, usize>::new();
    for name in &named {
        *seen.entry(name).or_default() += 1;
    }
    let mut answered = BTreeSet::new();
    for name in &named {
        if !answered.insert(name.as_str()) {
            continue;
        }
        let mut result = DescribeUserScramCredentialsResult::default().with_user(s(name.clone()));
        if seen[name.as_str()] > 1 {
            result.error_code = DUPLICATE_RESOURCE;
            result.error_message = Some(s(format!(
                "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
            )));
        } else {
            match users.users.get(name) {
                Some(creds) => result.credential_infos = infos(creds),
                None => {
                    result.error_code = RESOURCE_NOT_FOUND;
                    result.error_message = Some(s(format!(
                        "Attempt to describe a user credential that does not exist: {name}"
                    )));
                }
            }
        }
        response.results.push(result);
    }
    ctx.respond(&response)
}

/// One user's changes in an AlterUserScramCredentials request.
#[derive(Default)]
struct UserChanges {
    deletions: Vec<Hash>,
    upsertions: Vec<(Hash, Credential)>,
    error: Option<(i16, String)>,
}

pub async fn alter(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: AlterUserScramCredentialsRequest,
) -> Response {
    // The users in request order, each with its changes or the first error found.
    let mut order: Vec<String> = Vec::new();
    let mut changes: BTreeMap<String, UserChanges> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, i8), usize> = BTreeMap::new();
    fn entry<'a>(
        order: &mut Vec<String>,
        changes: &'a mut BTreeMap<String, UserChanges>,
        name: &str,
    ) -> &'a mut UserChanges {
        if !changes.contains_key(name) {
            order.push(name.to_string());
        }
        changes.entry(name.to_string()).or_default()
    }
    /// Records the user's first error (Kafka reports one per user).
    fn fail(c: &mut UserChanges, code: i16, message: &str) {
        if c.error.is_none() {
            c.error = Some((code, message.to_string()));
        }
    }
    for d in &request.deletions {
        *pairs.entry((d.name.to_string(), d.mechanism)).or_default() += 1;
    }
    for u in &request.upsertions {
        *pairs.entry((u.name.to_string(), u.mechanism)).or_default() += 1;
    }
    let duplicate = |name: &str, mechanism: i8| pairs[&(name.to_string(), mechanism)] > 1;
    for d in &request.deletions {
        let name = d.name.as_str();
        let c = entry(&mut order, &mut changes, name);
        if name.is_empty() {
            fail(c, UNACCEPTABLE_CREDENTIAL, "Username must not be empty");
        } else if duplicate(name, d.mechanism) {
            fail(
                c,
                DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request",
            );
        }
        match hash_of(d.mechanism) {
            Some(hash) => c.deletions.push(hash),
            None => fail(c, UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
        }
    }
    for u in &request.upsertions {
        let name = u.name.as_str();
        let c = entry(&mut order, &mut changes, name);
        if name.is_empty() {
            fail(c, UNACCEPTABLE_CREDENTIAL, "Username must not be empty");
        } else if duplicate(name, u.mechanism) {
            fail(
                c,
                DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request",
            );
        }
        let Some(hash) = hash_of(u.mechanism) else {
            fail(c, UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism");
            continue;
        };
        if u.iterations < ITERATIONS_MIN as i32 {
            fail(
                c,
                UNACCEPTABLE_CREDENTIAL,
                &format!(
                    "Too few iterations: {} (at least {ITERATIONS_MIN})",
                    u.iterations
                ),
            );
        } else if u.iterations > ITERATIONS_MAX as i32 {
            fail(
                c,
                UNACCEPTABLE_CREDENTIAL,
                &format!(
                    "Too many iterations: {} (at most {ITERATIONS_MAX})",
                    u.iterations
                ),
            );
        } else if u.salt.is_empty() || u.salted_password.is_empty() {
            fail(
                c,
                UNACCEPTABLE_CREDENTIAL,
                "The salt and the salted password must not be empty",
            );
        } else {
            let credential =
                Credential::from_salted(hash, &u.salted_password, &u.salt, u.iterations as u32);
            c.upsertions.push((hash, credential));
        }
    }
    let result = |name: &str, error: Option<&(i16, String)>| {
        let mut r = AlterUserScramCredentialsResult::default().with_user(s(name.to_string()));
        if let Some((code, message)) = error {
            r.error_code = *code;
            r.error_message = Some(s(message.clone()));
        } else {
            r.error_code = NONE;
        }
        r
    };
    let mut response = AlterUserScramCredentialsResponse::default();
    if let Err(why) = may_manage_credentials(shard, ctx, ALTER) {
        let denied = (CLUSTER_AUTHORIZATION_FAILED, why);
        response.results = order.iter().map(|n| result(n, Some(&denied))).collect();
        return ctx.respond(&response);
    }
    // Apply the changes of every user without an error, in one write.
    let data_dir = shard.config.data_dir.clone();
    let applied = glommio::executor()
        .spawn_blocking(move || {
            Users::update(&data_dir, |users| {
                let mut changed = false;
                let names: Vec<String> = changes.keys().cloned().collect();
                for name in names {
                    let c = changes.get_mut(&name).expect("listed");
                    if c.error.is_some() {
                        continue;
                    }
                    let missing = c
                        .deletions
                        .iter()
                        .any(|h| users.credential(&name, *h).is_none());
                    if missing {
                        c.error = Some((
                            RESOURCE_NOT_FOUND,
                            "Attempt to delete a user credential that does not exist".into(),
                        ));
                        continue;
                    }
                    for hash in &c.deletions {
                        users.remove_credential(&name, *hash);
                    }
                    for (hash, credential) in c.upsertions.drain(..) {
                        users.set_credential(&name, hash, credential);
                    }
                    changed = true;
                }
                (changes, changed)
            })
        })
        .await;
    match applied {
        Ok(changes) => {
            for name in &order {
                let error = changes[name].error.as_ref();
                if error.is_none() {
                    tracing::info!(
                        shard = shard.id.0,
                        user = %name,
                        by = %ctx.principal,
                        "SCRAM credentials altered"
                    );
                }
                response.results.push(result(name, error));
            }
        }
        Err(err) => {
            tracing::error!(shard = shard.id.0, %err, "cannot alter SCRAM credentials");
            let failed = (UNKNOWN_SERVER_ERROR, err);
            response.results = order.iter().map(|n| result(n, Some(&failed))).collect();
        }
    }
    ctx.respond(&response)
}
