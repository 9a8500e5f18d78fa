//! The server side of one SASL authentication, as Kafka's SaslServerAuthenticator runs
//! it: the mechanism chosen by SaslHandshake, then tokens until success or failure.
//! Mechanisms: PLAIN (RFC 4616) and SCRAM-SHA-256/512 ([`super::scram`]), all checked
//! against the [`Users`] file.

use super::scram::{self, Hash};
use super::users::Users;

/// A SASL mechanism Strand offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(Hash),
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::Scram(Hash::Sha256),
        Mechanism::Scram(Hash::Sha512),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(h) => h.mechanism(),
        }
    }

    pub fn parse(name: &str) -> Option<Mechanism> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name.trim()))
    }

    /// `--sasl-enabled-mechanisms`, in the order given.
    pub fn parse_list(list: &str) -> Result<Vec<Mechanism>, String> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let m = Mechanism::parse(name).ok_or_else(|| {
                format!(
                    "--sasl-enabled-mechanisms: {name:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
                )
            })?;
            if !out.contains(&m) {
                out.push(m);
            }
        }
        if out.is_empty() {
            return Err("--sasl-enabled-mechanisms names no mechanism".into());
        }
        Ok(out)
    }
}

/// The outcome of one token.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this token back and wait for the next.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send `response` (maybe empty).
    Authenticated { user: String, response: Vec<u8> },
    /// Failed; the reason is logged, and the client told only that authentication failed.
    Failed(String),
}

/// One connection's authentication in progress.
pub struct Authenticator {
    mechanism: Mechanism,
    scram: Option<scram::Server>,
}

impl Authenticator {
    pub fn new(mechanism: Mechanism) -> Authenticator {
        Authenticator {
            mechanism,
            scram: match mechanism {
                Mechanism::Scram(h) => Some(scram::Server::new(h)),
                Mechanism::Plain => None,
            },
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Takes the client's next token.
    pub fn step(&mut self, token: &[u8], users: &Users) -> Outcome {
        match (&mut self.scram, self.mechanism) {
            (Some(server), Mechanism::Scram(hash)) => {
                match server.step(token, |u| users.credential(u, hash)) {
                    scram::Step::Continue(r) => Outcome::Continue(r),
                    scram::Step::Done { user, response } => {
                        Outcome::Authenticated { user, response }
                    }
                    scram::Step::Failed(why) => Outcome::Failed(why),
                }
            }
            _ => plain(token, users),
        }
    }
}

/// PLAIN: `authzid NUL authcid NUL passwd`; an authzid, if given, must be the user.
fn plain(token: &[u8], users: &Users) -> Outcome {
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Outcome::Failed("malformed SASL/PLAIN message".into());
    };
    let Ok(user) = std::str::from_utf8(user) else {
        return Outcome::Failed("SASL/PLAIN user name is not UTF-8".into());
    };
    if user.is_empty() {
        return Outcome::Failed("SASL/PLAIN user name is empty".into());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Outcome::Failed("SASL/PLAIN authorization id differs from the user name".into());
    }
    if users.check_plain(user, password) {
        Outcome::Authenticated {
            user: user.to_string(),
            response: Vec::new(),
        }
    } else {
        Outcome::Failed(format!("invalid credentials for user {user:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_the_password() {
        let mut users = Users::default();
        users.set("alice", Hash::Sha256, b"pw", 4096);
        let ok = Authenticator::new(Mechanism::Plain).step(b"\0alice\0pw", &users);
        assert_eq!(
            ok,
            Outcome::Authenticated {
                user: "alice".into(),
                response: vec![]
            }
        );
        for bad in [
            &b"\0alice\0nope"[..],
            b"\0bob\0pw",
            b"alice\0pw",
            b"x\0alice\0pw",
            b"\0\0pw",
        ] {
            assert!(matches!(
                Authenticator::new(Mechanism::Plain).step(bad, &users),
                Outcome::Failed(_)
            ));
        }
        assert!(matches!(
            Authenticator::new(Mechanism::Plain).step(b"alice\0alice\0pw", &users),
            Outcome::Authenticated { .. }
        ));
    }

    #[test]
    fn mechanism_lists() {
        assert_eq!(
            Mechanism::parse_list("SCRAM-SHA-512, plain").unwrap(),
            vec![Mechanism::Scram(Hash::Sha512), Mechanism::Plain]
        );
        assert!(Mechanism::parse_list("GSSAPI").is_err());
        assert!(Mechanism::parse_list("").is_err());
    }
}
