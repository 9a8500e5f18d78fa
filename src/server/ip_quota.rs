//! `--max-connections-per-ip` and `--max-connections-per-ip-overrides` (Kafka's
//! `max.connections.per.ip` and `max.connections.per.ip.overrides`): how many connections
//! one client address may hold open on this node, every listener and shard together.
//! A connection over the limit is closed at accept (Kafka's `ConnectionQuotas.inc` in the
//! acceptor), logged and counted.
//!
//! The count is node-wide: one table shared by the shards, touched only when a connection
//! is accepted and when it ends (never by requests), and only when a limit is set.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use crate::config::Config;

/// Kafka's default: no limit.
pub const UNLIMITED: u32 = i32::MAX as u32;

/// The node's connections per client address and their limits.
pub struct IpQuota {
    default: u32,
    overrides: HashMap<IpAddr, u32>,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// A connection's place in its address's count, given back when dropped.
pub struct IpSlot {
    quota: Arc<IpQuota>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.quota.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl IpQuota {
    /// From the flags; `Err` names a bad override. Host names in the overrides are
    /// resolved once, at start (as Kafka does when it reads the setting).
    pub fn new(config: &Config) -> Result<Arc<IpQuota>, String> {
        let mut overrides = HashMap::new();
        for entry in config
            .max_connections_per_ip_overrides
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let bad = || {
                format!("--max-connections-per-ip-overrides: {entry:?} is not HOST:COUNT (e.g. 10.0.0.5:200,localhost:50)")
            };
            let (host, count) = entry.rsplit_once(':').ok_or_else(bad)?;
            let count: u32 = count.trim().parse().map_err(|_| bad())?;
            let host = host.trim().trim_start_matches('[').trim_end_matches(']');
            let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => (host, 0)
                    .to_socket_addrs()
                    .map_err(|e| {
                        format!("--max-connections-per-ip-overrides: cannot resolve {host:?}: {e}")
                    })?
                    .map(|a| a.ip())
                    .collect(),
            };
            for ip in ips {
                overrides.insert(canonical(ip), count);
            }
        }
        if config.max_connections_per_ip == 0 && overrides.is_empty() {
            // Kafka refuses this too: it would refuse every connection.
            return Err("--max-connections-per-ip 0 refuses every client; it needs --max-connections-per-ip-overrides for the addresses allowed".into());
        }
        Ok(Arc::new(IpQuota {
            default: config.max_connections_per_ip,
            overrides,
            open: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether any limit is set (else connections are not counted at all).
    pub fn limited(&self) -> bool {
        self.default < UNLIMITED || !self.overrides.is_empty()
    }

    /// The limit of `ip`.
    pub fn limit(&self, ip: IpAddr) -> u32 {
        self.overrides
            .get(&canonical(ip))
            .copied()
            .unwrap_or(self.default)
    }

    /// A slot for one more connection from `ip`, or `Err(limit)` if it has as many as it
    /// may. `Ok(None)` when no limit is set.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpSlot>, u32> {
        if !self.limited() {
            return Ok(None);
        }
        let ip = canonical(ip);
        let limit = self.limit(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                open.remove(&ip);
            }
            return Err(limit);
        }
        *n += 1;
        Ok(Some(IpSlot {
            quota: self.clone(),
            ip,
        }))
    }
}

/// An IPv4 client on an IPv6 socket (`::ffff:a.b.c.d`) counts as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn quota(args: &[&str]) -> Result<Arc<IpQuota>, String> {
        let mut argv = vec!["strand"];
        argv.extend_from_slice(args);
        IpQuota::new(&Cli::parse_from(argv).config)
    }

    #[test]
    fn limits_overrides_and_release() {
        let q = quota(&[
            "--max-connections-per-ip",
            "2",
            "--max-connections-per-ip-overrides",
            "10.0.0.9:0, 127.0.0.2:3",
        ])
        .unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let s1 = q.acquire(a).unwrap();
        let s2 = q.acquire(a).unwrap();
        assert_eq!(q.acquire(a).err(), Some(2));
        drop(s1);
        let _s3 = q.acquire(a).unwrap();
        drop(s2);
        assert_eq!(q.acquire("10.0.0.9".parse().unwrap()).err(), Some(0));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| q.acquire(mapped).unwrap()).collect();
        assert_eq!(q.acquire("127.0.0.2".parse().unwrap()).err(), Some(3));
        drop(held);
        assert!(q
            .open
            .lock()
            .unwrap()
            .get(&"127.0.0.2".parse().unwrap())
            .is_none());
    }

    #[test]
    fn unlimited_by_default_and_bad_settings_refused() {
        let q = quota(&[]).unwrap();
        assert!(!q.limited());
        assert!(q.acquire("10.0.0.1".parse().unwrap()).unwrap().is_none());
        assert!(quota(&["--max-connections-per-ip", "0"]).is_err());
        assert!(quota(&["--max-connections-per-ip-overrides", "10.0.0.1"]).is_err());
        assert!(quota(&["--max-connections-per-ip-overrides", "10.0.0.1:x"]).is_err());
        let q = quota(&["--max-connections-per-ip-overrides", "localhost:1"]).unwrap();
        assert_eq!(q.limit("127.0.0.1".parse().unwrap()), 1);
    }
}
