//! Process start-up and shutdown: from `strand serve` to N running shards and back.
//!
//! The main thread does what must happen once per process and can fail with a clear
//! message before any shard starts: lock the data directory, bind every shard's port (a
//! plain bind without `SO_REUSEPORT`, so a second broker on the same port is refused
//! instead of silently sharing it), raise the memlock limit, build the mesh. Then it starts
//! one pinned executor per shard and waits for SIGTERM/SIGINT, which it relays to the shards
//! so they drain in-flight requests and close their logs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpListener as StdListener;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::cluster::controller::Controller;
use crate::cluster::ShardId;
use crate::config::Config;
use crate::coordinator::txn::{LoadedTxns, TxnCoordinator};
use crate::coordinator::{GroupCoordinator, LoadedGroups};
use crate::shard::mesh::{self, Mesh, MeshEnds};
use crate::shard::{Shard, DELETE_SUFFIX};

/// glommio refuses to start below this locked-memory limit.
const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;
/// How long a busy port is retried at start-up (see [`bind_listener`]).
const BIND_RETRY_MS: u64 = 5_000;
/// How often a shard checks the process-wide shutdown flag.
const SHUTDOWN_POLL_MS: u64 = 50;

/// Everything a shard thread is handed by the main thread.
struct ShardStart {
    id: ShardId,
    config: Arc<Config>,
    ends: MeshEnds,
    /// The shard's client listeners, in the order of the listeners in force.
    listeners: Vec<StdListener>,
    /// The TLS listeners' server configuration (shared by every shard, replaced on SIGHUP).
    tls: Option<Arc<crate::security::tls::ServerTls>>,
    /// A cluster member's inter-node listener of this shard.
    rpc_listener: Option<StdListener>,
    /// `--max-connections-per-ip`, counted for the whole node.
    ip_quota: Arc<crate::server::ip_quota::IpQuota>,
    shutdown: Arc<AtomicBool>,
    ready: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    /// The shard's consumer groups and transactional ids, loaded by the main thread.
    groups: LoadedGroups,
    txns: LoadedTxns,
    /// The node's ACLs, with `--authorizer`.
    acls: Option<Arc<crate::security::acl::AclStore>>,
}

/// The checks of a configuration that need no more than the flags (and whether the data
/// directory holds a lone node's metadata): `serve` runs them first, `strand config check`
/// alone. `shards` is the shard count in force.
pub fn check_config(config: &Config, shards: usize) -> Result<(), String> {
    if shards == 0 || shards > crate::cluster::SHARDS_PER_NODE_MAX as usize {
        return Err(format!(
            "--shards must be between 1 and {}",
            crate::cluster::SHARDS_PER_NODE_MAX
        ));
    }
    if config.listen.port() as usize + shards > 65536 {
        return Err("--listen port + shard count exceeds 65535".into());
    }
    let listeners = config.resolve_listeners()?;
    for l in &listeners {
        if l.bind.port() as usize + shards > 65536 || l.advertised_port as usize + shards > 65536 {
            return Err(format!(
                "listener {}: port + shard count exceeds 65535",
                l.protocol.name()
            ));
        }
    }
    for (i, a) in listeners.iter().enumerate() {
        for b in &listeners[i + 1..] {
            let (pa, pb) = (a.bind.port() as usize, b.bind.port() as usize);
            if pa.abs_diff(pb) < shards
                && (a.bind.ip() == b.bind.ip()
                    || a.bind.ip().is_unspecified()
                    || b.bind.ip().is_unspecified())
            {
                return Err(format!(
                    "listeners {} and {} overlap: shard k serves each on its port + k, so their ports must be at least the shard count ({shards}) apart",
                    a.protocol.name(),
                    b.protocol.name()
                ));
            }
        }
    }
    let config_with = |c: &Config| {
        let mut c = c.clone();
        c.listener_set = listeners.clone();
        c
    };
    crate::security::tls::server_config(&config_with(config))?;
    crate::server::ip_quota::IpQuota::new(config)?;
    config.acl_policy()?;
    if listeners.iter().any(|l| l.protocol.sasl()) {
        crate::security::sasl::Mechanism::parse_list(&config.sasl_enabled_mechanisms)?;
        crate::security::users::Users::load(&config.data_dir)?;
    }
    if let Some(adv) = &config.advertise {
        let ok = adv
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(format!("--advertise {adv:?} must be HOST:PORT"));
        }
    }
    let peers = config.cluster_peers()?;
    if config.clustered() {
        let node = config
            .node_id
            .ok_or("--peers needs --node-id (this node's id among them)")?;
        if !peers.iter().any(|(id, _)| *id as i64 == node as i64) {
            return Err(format!("--node-id {node} is not among --peers"));
        }
        if config.rpc_listen.is_none() {
            return Err("--peers needs --rpc-listen (where peers reach this node)".into());
        }
        let single = config.data_dir.join("cluster").join("metadata.log");
        if std::fs::metadata(&single).is_ok_and(|m| m.len() > 0) {
            return Err(format!(
                "{} holds the metadata of a node running alone; a cluster member starts on a data directory of its own",
                single.display()
            ));
        }
    } else if config.node_id.is_some() || config.rpc_listen.is_some() {
        return Err(
            "--node-id and --rpc-listen make this node a cluster member: give --peers too".into(),
        );
    }
    for def in crate::cluster::topic_config::DEFS {
        let value = crate::cluster::topic_config::broker_default(config, def.name);
        crate::cluster::topic_config::validate(def.name, &value).map_err(|e| {
            format!(
                "{} (the default of topic config {}): {e}",
                def.flag, def.name
            )
        })?;
    }
    Ok(())
}

/// [`check_config`] with the shard count `serve` would use on this machine.
pub fn check(config: &Config) -> Result<(), String> {
    let shards = match config.shards {
        Some(shards) => shards,
        None => allowed_cpus()
            .map_err(|e| format!("cannot read the CPU affinity: {e}"))?
            .len(),
    };
    check_config(config, shards)
}

/// Runs the broker until SIGTERM/SIGINT. Errors are start-up failures worth a clear message.
pub fn serve(config: Config) -> Result<(), String> {
    // The CPUs this process may run on (a container's cpuset, `taskset`): shards are
    // pinned to these, never to a CPU the operator did not give us.
    let cpus = allowed_cpus().map_err(|e| format!("cannot read the CPU affinity: {e}"))?;
    let shards = config.shards.unwrap_or(cpus.len());
    check_config(&config, shards)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let _lock = lock_data_dir(&config.data_dir)?;
    raise_memlock_limit()?;
    let fds = fd_budget(
        raise_nofile_limit(),
        shards,
        config.max_connections_per_shard,
        config.max_open_segment_files_per_shard,
    )?;
    tracing::info!(
        limit = fds.limit,
        reserve = fds.reserve,
        segment_files_per_shard = fds.segment_files_per_shard,
        partitions_max = fds.partitions_max,
        "file descriptor budget: a reserve for listeners, connections, the mesh and metadata files, a cache of sealed-segment files per shard, one descriptor per partition for the rest"
    );

    let mut config = config;
    config.listener_set = config.resolve_listeners()?;
    let tls =
        crate::security::tls::server_config(&config)?.map(crate::security::tls::ServerTls::new);
    let ip_quota = crate::server::ip_quota::IpQuota::new(&config)?;
    let mut listeners = Vec::with_capacity(shards);
    for k in 0..shards {
        let mut of_shard = Vec::with_capacity(config.listener_set.len());
        for l in &config.listener_set {
            let mut addr = l.bind;
            addr.set_port(l.bind.port() + k as u16);
            let listener = bind_listener(addr).map_err(|e| {
                format!("cannot listen on {addr} ({}) for shard {k}: {e} (is another broker running on this port?)", l.protocol.name())
            })?;
            of_shard.push(listener);
        }
        listeners.push(of_shard);
    }
    let mut rpc_listeners = Vec::with_capacity(shards);
    for k in 0..shards {
        rpc_listeners.push(match config.rpc_listen {
            Some(addr) if config.clustered() => {
                Some(crate::server::rpc::bind(addr, k as u16).map_err(|e| {
                    format!("cannot listen on {addr} (+{k}) for peers of shard {k}: {e} (is another node running on this port?)")
                })?)
            }
            _ => None,
        });
    }
    clean_deleted_dirs(&config.data_dir);
    let coordinator_state =
        crate::coordinator::redistribute(&config.data_dir, shards, crate::util::now_ms())
            .map_err(|e| format!("cannot load group and transaction state: {e}"))?;

    if shards > cpus.len() {
        tracing::warn!(
            shards,
            cpus = cpus.len(),
            "more shards than CPUs this process may use: shards share cores, each pinned to CPU list entry (shard % {})",
            cpus.len()
        );
    }
    config.shards = Some(shards);
    config.max_open_segment_files_per_shard = fds.segment_files_per_shard;
    config.descriptor_partitions_max = Some(fds.partitions_max);
    let acls = match config.acl_policy()? {
        Some(_) => Some(Arc::new(crate::security::acl::AclStore::open(
            &config.data_dir,
        )?)),
        None => None,
    };
    let config = Arc::new(config);
    let shutdown = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(shards);
    let per_shard = mesh::build(shards)
        .into_iter()
        .zip(listeners)
        .zip(coordinator_state);
    for (k, ((ends, listener), (groups, txns))) in per_shard.enumerate() {
        let start = ShardStart {
            id: ShardId(k as u16),
            config: config.clone(),
            ends,
            listeners: listener,
            tls: tls.clone(),
            rpc_listener: rpc_listeners[k].take(),
            ip_quota: ip_quota.clone(),
            shutdown: shutdown.clone(),
            ready: ready.clone(),
            failed: failed.clone(),
            groups,
            txns,
            acls: acls.clone(),
        };
        let cpu = cpus[k % cpus.len()];
        tracing::debug!(shard = k, cpu, "pinning shard");
        let placement = Placement::Fixed(cpu);
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{k}"))
            .io_memory(config.io_memory_bytes)
            .spawn(move || async move {
                let id = start.id;
                let failed = start.failed.clone();
                let shutdown = start.shutdown.clone();
                // Stops the whole broker if this shard ends (an error, a panic) before a
                // shutdown was asked for: its partitions would otherwise stay advertised
                // with no one serving them.
                let _guard = ShardExitGuard {
                    id,
                    failed: failed.clone(),
                    shutdown: shutdown.clone(),
                };
                if let Err(err) = run_shard(start).await {
                    tracing::error!(shard = id.0, "{err}");
                    failed.store(true, Ordering::SeqCst);
                    shutdown.store(true, Ordering::SeqCst);
                }
            })
            .map_err(|e| format!("cannot start shard {k}: {e}"))?;
        handles.push(handle);
    }

    // Relay SIGTERM/SIGINT to the shards through the shared flag; SIGHUP re-reads the TLS
    // certificates (Kafka reloads them through a dynamic config change instead).
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    let flag = shutdown.clone();
    let reload = (config.clone(), tls);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == libc::SIGHUP {
                    reload_tls(&reload.0, reload.1.as_deref());
                } else {
                    tracing::info!(signal, "shutdown requested; draining");
                    flag.store(true, Ordering::SeqCst);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    for handle in handles {
        if handle.join().is_err() {
            failed.store(true, Ordering::SeqCst);
        }
    }
    signal_handle.close();
    if failed.load(Ordering::SeqCst) {
        return Err("a shard failed; see the log above".into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: the TLS listeners' certificates and key (and mTLS CAs) read again; new
/// handshakes use them, open connections keep theirs, a bad file keeps the old ones.
fn reload_tls(config: &Config, tls: Option<&crate::security::tls::ServerTls>) {
    let Some(tls) = tls else {
        tracing::info!("SIGHUP: no SSL or SASL_SSL listener, no certificate to re-read");
        return;
    };
    match tls.reload(config) {
        Ok(()) => tracing::info!(
            cert = ?config.tls_cert_file,
            ca = ?config.tls_ca_file,
            "SIGHUP: TLS certificates re-read; new connections use them"
        ),
        Err(err) => tracing::error!(
            "SIGHUP: TLS certificates not reloaded, the previous ones stay in force: {err}"
        ),
    }
}

/// See where it is made in [`serve`].
struct ShardExitGuard {
    id: ShardId,
    failed: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
}

impl Drop for ShardExitGuard {
    fn drop(&mut self) {
        if !self.shutdown.swap(true, Ordering::SeqCst) {
            tracing::error!(
                shard = self.id.0,
                "shard stopped unexpectedly; stopping the broker"
            );
            self.failed.store(true, Ordering::SeqCst);
        }
    }
}

async fn run_shard(start: ShardStart) -> Result<(), String> {
    let config = start.config.clone();
    crate::storage::warm_up_io(&config.data_dir)
        .await
        .map_err(|e| {
            format!(
                "direct I/O warm-up in {} failed: {e}",
                config.data_dir.display()
            )
        })?;
    let (mesh, receivers) = Mesh::connect(start.id, start.ends).await;
    let rpc_listener = start.rpc_listener;
    // A cluster's groups live in the replicated offsets topic; a node alone keeps them in
    // its shards' group logs.
    let groups = if config.clustered() {
        GroupCoordinator::replicated()
    } else {
        GroupCoordinator::new(start.groups)
    };
    let shard = Shard::new(
        start.id,
        config.clone(),
        mesh,
        groups,
        TxnCoordinator::new(start.txns),
        crate::security::acl::ShardAcls::new(start.acls, config.acl_policy()?.unwrap_or_default()),
    );
    shard
        .groups
        .set_offsets_log(Rc::new(crate::shard::offsets::ShardOffsetsLog(
            Rc::downgrade(&shard),
        )));
    for (from, receiver) in receivers {
        shard.spawn_mesh_receiver(from, receiver);
    }
    shard.spawn_flusher();
    shard.spawn_maintenance();
    shard.spawn_leader_balancing();
    if let Some(listener) = rpc_listener {
        start_links(&shard, listener)?;
    }
    spawn_shutdown_watch(&shard, start.shutdown.clone());

    if shard.id == ShardId(0) {
        let data_dir = config.data_dir.clone();
        let shard_count = config.shards_resolved();
        let default_partitions = config.default_partitions;
        let flag_max = config
            .max_partitions_per_shard
            .saturating_mul(config.shards_resolved());
        let (partitions_max, partitions_why) = match config.descriptor_partitions_max {
            Some(fd_max) if fd_max < flag_max => {
                tracing::warn!(
                    partitions_max = fd_max,
                    flag_max,
                    "the open-file limit covers fewer partitions than --max-partitions-per-shard × shards; the partition cap is lowered (raise `ulimit -n` / LimitNOFILE= for more)"
                );
                (
                    fd_max,
                    "the open-file limit (ulimit -n) leaves descriptors for no more; raise it for more partitions".to_string(),
                )
            }
            _ => (flag_max, "--max-partitions-per-shard × shards".to_string()),
        };
        let broker_defaults = crate::cluster::topic_config::DEFS
            .iter()
            .map(|d| {
                (
                    d.name.to_string(),
                    crate::cluster::topic_config::broker_default(&config, d.name),
                )
            })
            .collect();
        if config.clustered() {
            start_cluster_member(
                &shard,
                (default_partitions, broker_defaults),
                (partitions_max, partitions_why),
            )
            .await?;
        } else {
            let loaded = glommio::executor()
                .spawn_blocking(move || Controller::load(&data_dir))
                .await
                .map_err(|e| format!("cannot load cluster metadata: {e}"))?;
            let controller =
                Controller::local(loaded, shard_count, default_partitions, broker_defaults)
                    .with_partitions_max(partitions_max, partitions_why);
            shard.start_controller(controller).await;
        }
        if let Some(addr) = config.metrics_listen {
            glommio::spawn_local(crate::server::metrics_http::serve(shard.clone(), addr)).detach();
        }
    } else {
        // Wait for the controller's first snapshot before serving anything.
        while shard.snapshot().version == 0 {
            let seen = shard.snapshot_changed.generation();
            if shard.snapshot().version != 0 || shard.shutting_down.get() {
                break;
            }
            let _ = futures_lite::future::or(
                shard.snapshot_changed.wait(seen),
                shard.shutdown.wait(shard.shutdown.generation()),
            )
            .await;
            if shard.shutting_down.get() {
                break;
            }
        }
    }

    // Transactions left open or half-finished by the last run are timed out or finished.
    crate::shard::txn::spawn_txn_timer(&shard);

    // The listeners were bound by the main thread; glommio adopts the sockets.
    let security = Rc::new(crate::server::ShardSecurity {
        mechanisms: crate::security::sasl::Mechanism::parse_list(&config.sasl_enabled_mechanisms)
            .unwrap_or_default(),
        users: std::cell::RefCell::new(crate::security::users::UserStore::new(&config.data_dir)),
        ip_quota: start.ip_quota.clone(),
    });
    let mut accepting = Vec::with_capacity(start.listeners.len());
    for (index, (std_listener, l)) in start
        .listeners
        .into_iter()
        .zip(&config.listener_set)
        .enumerate()
    {
        let fd = std_listener.into_raw_fd();
        // SAFETY: `fd` is a bound, listening TCP socket whose ownership we just took.
        let listener =
            unsafe { <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut addr = l.bind;
        addr.set_port(l.bind.port() + shard.id.0);
        tracing::info!(shard = shard.id.0, %addr, listener = l.protocol.name(), partitions = shard.partition_count(), "listening");
        let ctx = Rc::new(crate::server::ListenerCtx {
            index,
            protocol: l.protocol,
            tls: l.protocol.tls().then(|| start.tls.clone()).flatten(),
            security: security.clone(),
        });
        accepting.push((listener, ctx));
    }
    if start.ready.fetch_add(1, Ordering::SeqCst) + 1 == config.shards_resolved() {
        tracing::info!(
            shards = config.shards_resolved(),
            data_dir = %config.data_dir.display(),
            "ready"
        );
    }

    if failure_probe("shard-panic").and_then(|k| k.parse::<u16>().ok()) == Some(shard.id.0) {
        // Lets the tests prove that a shard dying while others serve stops the broker.
        glommio::timer::sleep(Duration::from_millis(FAILURE_PROBE_DELAY_MS)).await;
        panic!("failure probe shard-panic: shard {} stops here", shard.id.0);
    }
    let budget = crate::server::request_budget(&shard);
    let loops: Vec<_> = accepting
        .into_iter()
        .map(|(listener, ctx)| {
            let shard = shard.clone();
            let budget = budget.clone();
            glommio::spawn_local(async move {
                crate::server::accept_loop(&shard, listener, ctx, budget).await
            })
        })
        .collect();
    for accepting in loops {
        accepting.await;
    }

    // Drain: connections finish their in-flight requests (bounded by the grace period).
    if !shard.wait_connections_drained().await {
        tracing::warn!(
            shard = shard.id.0,
            open = shard.connections.get(),
            "connections still open after the grace period"
        );
    }
    if config.clustered() {
        shard.wait_cluster_stopped().await;
    }
    shard.close_partitions().await;
    tracing::info!(shard = shard.id.0, "shard stopped");
    Ok(())
}

/// Shard 0 of a cluster member: opens the metadata group, starts the links to the other
/// members and the controller over the group.
async fn start_cluster_member(
    shard: &Rc<Shard>,
    (default_partitions, broker_defaults): (i32, std::collections::BTreeMap<String, String>),
    (partitions_max, partitions_why): (usize, String),
) -> Result<(), String> {
    use crate::shard::meta::{MetaCommitter, MetaGroup};
    let config = shard.config.clone();
    let peers = config.cluster_peers()?;
    let node = config.node() as u64;
    let members: Vec<u64> = peers.iter().map(|(id, _)| *id).collect();
    let dir = config.data_dir.join("cluster").join("raft");
    let group = MetaGroup::open(&dir, config.clone(), node, &members)
        .await
        .map_err(|e| format!("cannot open the metadata log in {}: {e}", dir.display()))?;
    let controller = Controller::replicated(
        shard.node,
        members
            .iter()
            .map(|&id| crate::cluster::NodeId(id as i32))
            .collect(),
        Rc::new(MetaCommitter(group.clone())),
        config.shards_resolved(),
        default_partitions,
        broker_defaults,
    )
    .with_partitions_max(partitions_max, partitions_why)
    .with_default_replication_factor(config.default_replication_factor);
    shard
        .raft_groups
        .borrow_mut()
        .insert(crate::shard::meta::METADATA_GROUP, group.raft().clone());
    *shard.meta.borrow_mut() = Some(group.clone());
    // Links that came up before the group existed count as live from now on (later
    // changes reach the group through the links' handler).
    let transport = shard.peers.borrow().clone();
    if let Some(peers) = transport {
        group.set_transport(peers.clone());
        for &member in members.iter().filter(|&&m| m != node) {
            if peers.is_up(member) {
                group.peer_up(member);
            }
        }
    }
    group.raft().spawn_driver();
    shard
        .start_cluster_controller(controller, group.clone())
        .await;
    tracing::info!(node, members = ?members, "cluster member: metadata group started");
    Ok(())
}

/// A cluster member's shard: starts its links to the same shard of every peer. When the
/// broker stops, the shard's Raft groups stop, then the links.
fn start_links(shard: &Rc<Shard>, listener: StdListener) -> Result<(), String> {
    use crate::server::rpc::{LinksConfig, PeerLinks, RpcLimits};
    let config = shard.config.clone();
    let node = config.node() as u64;
    let peers = config.cluster_peers()?;
    let links = PeerLinks::start(
        LinksConfig {
            node_id: node,
            shard: shard.id.0,
            shard_count: config.shards_resolved() as u16,
            incarnation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
            cluster_id: String::new(),
            peers: peers.into_iter().filter(|(id, _)| *id != node).collect(),
            limits: RpcLimits::default(),
        },
        listener,
        Rc::new(crate::server::cluster::ShardLinks {
            shard: shard.clone(),
        }),
    )
    .map_err(|e| {
        format!(
            "cannot start the inter-node links of shard {}: {e}",
            shard.id.0
        )
    })?;
    *shard.peers.borrow_mut() = Some(links.clone());
    let watched = shard.clone();
    glommio::spawn_local(async move {
        while !watched.shutting_down.get() {
            let seen = watched.shutdown.generation();
            if watched.shutting_down.get() {
                break;
            }
            watched.shutdown.wait(seen).await;
        }
        if watched.config.controlled_shutdown_enable {
            watched.hand_over_leadership().await;
        }
        // Produces and fetches in flight finish while the groups still run (a produce
        // waiting here hears its entry's fate from the new leader).
        watched.wait_connections_drained().await;
        let groups: Vec<_> = watched.raft_groups.borrow().values().cloned().collect();
        for group in groups {
            group.stop().await;
        }
        links.shutdown().await;
        watched.cluster_stopped.set(true);
        watched.connections_changed.notify_all();
    })
    .detach();
    Ok(())
}

fn spawn_shutdown_watch(shard: &Rc<Shard>, flag: Arc<AtomicBool>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        while !flag.load(Ordering::SeqCst) {
            glommio::timer::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
        }
        shard.shutting_down.set(true);
        shard.shutdown.notify_all();
        // Long-polling fetches and produce waits re-check and return.
        shard.flushed.notify_all();
    })
    .detach();
}

/// Binds a shard's port. A port held by a process that was just killed stays busy for a
/// moment: the kernel tears down a dead process's io_uring asynchronously, and its pending
/// accept keeps the listening socket alive until then. So `EADDRINUSE` is retried for
/// [`BIND_RETRY_MS`] before the broker gives up (a live broker on the port still makes it
/// give up, just not at once).
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<StdListener> {
    let deadline = std::time::Instant::now() + Duration::from_millis(BIND_RETRY_MS);
    let mut logged = false;
    loop {
        match StdListener::bind(addr) {
            Err(err)
                if err.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !logged {
                    tracing::info!(%addr, "port is busy; waiting up to {BIND_RETRY_MS} ms for it to be released");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// How long after listening a `shard-panic` failure probe fires.
const FAILURE_PROBE_DELAY_MS: u64 = 500;

/// Failure probes (as in Redpanda's `failure_probes`): faults the tests switch on through
/// `STRAND_FAILURE_PROBES=name=value,…` to reach error paths no input can reach. Unset in
/// production; each probe is read once, at start-up. Today: `shard-panic=K` (shard K
/// panics half a second after it starts listening).
fn failure_probe(name: &str) -> Option<String> {
    let probes = std::env::var("STRAND_FAILURE_PROBES").ok()?;
    probes.split(',').find_map(|probe| {
        let (key, value) = probe.split_once('=')?;
        (key.trim() == name).then(|| value.trim().to_string())
    })
}

/// The CPUs this process's affinity mask allows, in increasing order (never empty).
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(std::io::Error::other("the affinity mask is empty"));
    }
    Ok(cpus)
}

/// Takes an exclusive `flock` on `<data-dir>/.lock`, held for the life of the process.
fn lock_data_dir(dir: &Path) -> Result<File, String> {
    let path = dir.join(".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(format!(
            "data directory {} is locked by another strand process{}",
            dir.display(),
            match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            }
        ));
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

/// Raises `resource`'s soft limit to its hard limit; returns (soft before, limit after)
/// or why the limit could not be read. A refused raise leaves the limit as it was.
fn raise_soft_limit(resource: libc::__rlimit_resource_t) -> std::io::Result<(u64, libc::rlimit)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit syscalls on a stack value.
    unsafe {
        if libc::getrlimit(resource, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(resource, &limit) != 0 {
                tracing::warn!(resource, err = %std::io::Error::last_os_error(), "cannot raise a soft limit to its hard limit");
            }
            libc::getrlimit(resource, &mut limit);
        }
        Ok((before, limit))
    }
}

/// glommio locks memory for io_uring buffers: raise the soft limit to the hard one.
fn raise_memlock_limit() -> Result<(), String> {
    let limit = raise_soft_limit(libc::RLIMIT_MEMLOCK)
        .map(|(_, limit)| limit.rlim_cur)
        .unwrap_or(0);
    if limit != libc::RLIM_INFINITY && limit < MEMLOCK_BYTES_MIN {
        return Err(format!(
            "the locked-memory limit (ulimit -l) is {} KiB; strand needs at least {} KiB per shard (raise it with `ulimit -l` or LimitMEMLOCK=)",
            limit / 1024,
            MEMLOCK_BYTES_MIN / 1024
        ));
    }
    Ok(())
}

/// Raises the open-file soft limit to the hard one and logs both; returns the limit now
/// in force (1024, Linux's usual default, if it cannot be read). A broker holds one
/// descriptor per partition, per connection, and a bounded cache of sealed-segment files;
/// distributions default the soft limit to 1024.
fn raise_nofile_limit() -> u64 {
    let (soft_before, limit) = match raise_soft_limit(libc::RLIMIT_NOFILE) {
        Ok(raised) => raised,
        Err(err) => {
            tracing::warn!(%err, "cannot read the open-file limit; assuming 1024");
            return 1024;
        }
    };
    tracing::info!(
        soft_before,
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        "open-file limit (RLIMIT_NOFILE): soft limit raised to the hard limit"
    );
    limit.rlim_cur
}

/// Descriptors kept out of the budget whatever the limit: listeners (Kafka and metrics),
/// the metadata, group and transaction files, recovery scans, stdio and log files.
const FD_RESERVE_FIXED: u64 = 64;
/// Per shard: its io_uring rings, event and timer descriptors, the mesh.
const FD_RESERVE_PER_SHARD: u64 = 16;
/// The sealed-segment cache a shard gets by default: between these.
const SEGMENT_FILES_MIN: u64 = 8;
const SEGMENT_FILES_MAX: u64 = 1024;

/// How the open-file limit is shared out.
#[derive(Debug, PartialEq, Eq)]
struct FdBudget {
    limit: u64,
    /// Kept for everything but partitions and the segment cache, connections included.
    reserve: u64,
    segment_files_per_shard: usize,
    /// Partitions (one open active segment each) the rest covers.
    partitions_max: usize,
}

/// Shares out the open-file limit: a reserve (fixed, per shard, and a quarter of the
/// limit — at most the connection cap — for connections), then the sealed-segment caches
/// (`cache_flag`, or an eighth of the rest), then one descriptor per partition. Fails if
/// nothing is left for partitions.
fn fd_budget(
    limit: u64,
    shards: usize,
    max_connections_per_shard: usize,
    cache_flag: usize,
) -> Result<FdBudget, String> {
    let shards_u = shards.max(1) as u64;
    let connections = (max_connections_per_shard as u64)
        .saturating_mul(shards_u)
        .min(limit / 4);
    let reserve = FD_RESERVE_FIXED + FD_RESERVE_PER_SHARD * shards_u + connections;
    let rest = limit.saturating_sub(reserve);
    let cache = match cache_flag {
        0 => (rest / 8 / shards_u).clamp(SEGMENT_FILES_MIN, SEGMENT_FILES_MAX),
        n => n as u64,
    };
    let partitions = rest.saturating_sub(cache.saturating_mul(shards_u));
    if partitions == 0 {
        return Err(format!(
            "the open-file limit ({limit}) is too low: {reserve} descriptors are kept for listeners, connections and shards and {} for sealed-segment files ({cache} per shard), leaving none for partitions; raise `ulimit -n` (LimitNOFILE=) or lower --max-open-segment-files-per-shard",
            cache.saturating_mul(shards_u)
        ));
    }
    Ok(FdBudget {
        limit,
        reserve,
        segment_files_per_shard: cache as usize,
        partitions_max: usize::try_from(partitions).unwrap_or(usize::MAX),
    })
}

/// Finishes deletions interrupted by a crash.
fn clean_deleted_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(DELETE_SUFFIX) && entry.path().is_dir() {
            tracing::info!(dir = %entry.path().display(), "removing a partition deleted before the last stop");
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(%err, "cannot remove {}", entry.path().display());
            }
        }
    }
}

#[cfg(test)]
mod fd_budget_tests {
    use super::fd_budget;

    #[test]
    fn the_open_file_limit_is_shared_out_and_a_too_low_one_is_refused() {
        // The common soft limit, one shard: a reserve, a cache, partitions for the rest.
        let b = fd_budget(1024, 1, 10_000, 0).unwrap();
        assert_eq!(b.reserve, 64 + 16 + 256);
        assert_eq!(b.segment_files_per_shard, (1024 - 336) / 8);
        assert_eq!(b.partitions_max, 1024 - 336 - 86);
        // The flag sets the cache; partitions get what is left.
        let b = fd_budget(1024, 2, 10_000, 100).unwrap();
        assert_eq!(b.segment_files_per_shard, 100);
        assert_eq!(b.partitions_max, 1024 - (64 + 32 + 256) - 200);
        // A large limit: the cache is capped, connections reserve at most their cap.
        let b = fd_budget(1 << 20, 4, 10_000, 0).unwrap();
        assert_eq!(b.segment_files_per_shard, 1024);
        assert_eq!(b.reserve, 64 + 64 + 40_000);
        // Nothing left for partitions: a clear error.
        let err = fd_budget(100, 1, 10_000, 0).unwrap_err();
        assert!(err.contains("open-file limit (100) is too low"), "{err}");
    }
}
