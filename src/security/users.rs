//! The users SASL logins are checked against: `DATA_DIR/users.json`, written by
//! `strand user set` (atomically: a temporary file, fsync, rename, fsync of the
//! directory) and read by the broker, which reloads it when it changes. Each user has a
//! SCRAM credential per mechanism (salt, StoredKey, ServerKey, iterations); passwords are
//! never stored. SASL/PLAIN logins are checked against the same credentials.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::scram::{self, Credential, Hash};

/// The file's name in the data directory.
pub const USERS_FILE: &str = "users.json";

/// Users and their credentials, by name, then by mechanism name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Users {
    pub users: BTreeMap<String, BTreeMap<String, Credential>>,
}

impl Users {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(USERS_FILE)
    }

    /// Reads the file; no file is no users.
    pub fn load(data_dir: &Path) -> Result<Users, String> {
        let path = Users::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a users file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Users::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the file durably: a crash leaves the old file or the new one, whole.
    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let path = Users::path(data_dir);
        let tmp = data_dir.join(format!("{USERS_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Reads the file, applies `change` and writes the file back if `change` says so
    /// (`(result, true)`), all under an exclusive lock on `users.json.lock`: writers of
    /// one data directory (the shards, `strand user`) never lose each other's changes.
    pub fn update<T>(
        data_dir: &Path,
        change: impl FnOnce(&mut Users) -> (T, bool),
    ) -> Result<T, String> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let lock_path = data_dir.join(format!("{USERS_FILE}.lock"));
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "cannot lock {}: {}",
                lock_path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let mut users = Users::load(data_dir)?;
        let (result, changed) = change(&mut users);
        if changed {
            users.save(data_dir)?;
        }
        drop(lock);
        Ok(result)
    }

    /// Sets `user`'s credential for `hash` from `password`, with a fresh salt.
    pub fn set(&mut self, user: &str, hash: Hash, password: &[u8], iterations: u32) {
        let credential = Credential::new(hash, password, &scram::random_bytes(32), iterations);
        self.users
            .entry(user.to_string())
            .or_default()
            .insert(hash.mechanism().to_string(), credential);
    }

    /// Removes a user; whether it existed.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// Sets `user`'s credential for `hash` (AlterUserScramCredentials).
    pub fn set_credential(&mut self, user: &str, hash: Hash, credential: Credential) {
        self.users
            .entry(user.to_string())
            .or_default()
            .insert(hash.mechanism().to_string(), credential);
    }

    /// Removes `user`'s credential for `hash` (and the user with its last one); whether
    /// it existed.
    pub fn remove_credential(&mut self, user: &str, hash: Hash) -> bool {
        let Some(creds) = self.users.get_mut(user) else {
            return false;
        };
        let removed = creds.remove(hash.mechanism()).is_some();
        if creds.is_empty() {
            self.users.remove(user);
        }
        removed
    }

    pub fn credential(&self, user: &str, hash: Hash) -> Option<Credential> {
        self.users.get(user)?.get(hash.mechanism()).cloned()
    }

    /// A SASL/PLAIN login: the password must match one of the user's SCRAM credentials
    /// (SHA-512's if it has one).
    pub fn check_plain(&self, user: &str, password: &[u8]) -> bool {
        let Some(creds) = self.users.get(user) else {
            return false;
        };
        [Hash::Sha512, Hash::Sha256]
            .into_iter()
            .find_map(|h| creds.get(h.mechanism()).map(|c| c.matches(h, password)))
            == Some(true)
    }
}

/// A shard's view of the users file: reloaded when its modification time or size
/// changes, so `strand user set` takes effect on the next login without a restart.
pub struct UserStore {
    data_dir: PathBuf,
    seen: Option<(SystemTime, u64)>,
    users: Users,
}

impl UserStore {
    pub fn new(data_dir: &Path) -> UserStore {
        UserStore {
            data_dir: data_dir.to_path_buf(),
            seen: None,
            users: Users::default(),
        }
    }

    /// The users as the file now says (the last good read if it cannot be read).
    pub fn current(&mut self) -> &Users {
        let stamp = std::fs::metadata(Users::path(&self.data_dir))
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp != self.seen {
            match Users::load(&self.data_dir) {
                Ok(users) => {
                    self.users = users;
                    self.seen = stamp;
                }
                Err(err) => tracing::warn!(%err, "keeping the users read before"),
            }
        }
        &self.users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_save_load_and_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = Users::load(dir.path()).unwrap();
        assert!(users.users.is_empty());
        users.set("alice", Hash::Sha512, b"alice-secret", 4096);
        users.set("bob", Hash::Sha256, b"bob-secret", 4096);
        users.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(Users::path(dir.path())).unwrap();
        assert!(!text.contains("alice-secret"), "passwords are never stored");
        let loaded = Users::load(dir.path()).unwrap();
        assert_eq!(loaded, users);
        assert!(loaded.check_plain("alice", b"alice-secret"));
        assert!(loaded.check_plain("bob", b"bob-secret"));
        assert!(!loaded.check_plain("alice", b"bob-secret"));
        assert!(!loaded.check_plain("carol", b""));
        assert!(loaded.credential("alice", Hash::Sha256).is_none());
        let mut store = UserStore::new(dir.path());
        assert!(store.current().check_plain("alice", b"alice-secret"));
    }

    #[test]
    fn update_under_lock_and_remove_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let writers: Vec<_> = (0..4)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for j in 0..5 {
                        Users::update(&path, |u| {
                            u.set(&format!("u{i}-{j}"), Hash::Sha256, b"pw", 4096);
                            ((), true)
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let mut users = Users::load(&path).unwrap();
        assert_eq!(users.users.len(), 20, "no update lost");
        users.set("u0-0", Hash::Sha512, b"pw", 4096);
        assert!(users.remove_credential("u0-0", Hash::Sha256));
        assert!(!users.remove_credential("u0-0", Hash::Sha256));
        assert!(users.users.contains_key("u0-0"));
        assert!(users.remove_credential("u0-0", Hash::Sha512));
        assert!(!users.users.contains_key("u0-0"));
    }
}
