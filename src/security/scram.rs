//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), the server side, and the stored
//! form of a password: salt, StoredKey, ServerKey and iteration count — never the
//! password itself.
//!
//! The exchange is two round trips: client-first (`n,,n=USER,r=CNONCE`) → server-first
//! (`r=CNONCE+SNONCE,s=SALT,i=ITER`); client-final (`c=biws,r=NONCE,p=PROOF`) →
//! server-final (`v=SERVER_SIGNATURE`). The proof is checked as the RFC says:
//! `H(proof XOR HMAC(StoredKey, AuthMessage)) == StoredKey`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// Iterations `strand user set` uses unless told (Kafka's default, RFC 7677's minimum).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// The range of iterations accepted (Kafka's).
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;

/// A SCRAM hash function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            Hash::Sha256 => "SCRAM-SHA-256",
            Hash::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_mechanism(name: &str) -> Option<Hash> {
        [Hash::Sha256, Hash::Sha512]
            .into_iter()
            .find(|h| h.mechanism().eq_ignore_ascii_case(name))
    }

    fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with this hash's HMAC.
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            Hash::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// What is stored for one user and mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(serde::de::Error::custom)
    }
}

impl Credential {
    /// The credential of `password` with `salt` and `iterations`.
    pub fn new(hash: Hash, password: &[u8], salt: &[u8], iterations: u32) -> Credential {
        Credential::from_salted(hash, &hash.hi(password, salt, iterations), salt, iterations)
    }

    /// The credential of a SaltedPassword (`Hi(password, salt, iterations)`), as
    /// AlterUserScramCredentials sends it: the password itself never reaches the broker.
    pub fn from_salted(hash: Hash, salted: &[u8], salt: &[u8], iterations: u32) -> Credential {
        let client_key = hash.hmac(salted, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            stored_key: hash.h(&client_key),
            server_key: hash.hmac(salted, b"Server Key"),
            iterations,
        }
    }

    /// Whether `password` is the one this credential was made from (for SASL/PLAIN).
    pub fn matches(&self, hash: Hash, password: &[u8]) -> bool {
        let salted = hash.hi(password, &self.salt, self.iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        constant_time_eq(&hash.h(&client_key), &self.stored_key)
    }
}

/// Compares without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random nonce or salt of `len` bytes from the operating system.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    getrandom::getrandom(&mut out).expect("the operating system's random generator");
    out
}

/// Decodes a SCRAM `saslname` (`=2C` is `,`, `=3D` is `=`); `None` if malformed.
fn decode_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Where a server exchange stands.
enum State {
    /// Waiting for client-first.
    First,
    /// Server-first sent; waiting for client-final.
    Final {
        user: String,
        credential: Credential,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// The server side of one SCRAM exchange.
pub struct Server {
    hash: Hash,
    state: State,
    /// The server's part of the nonce (random unless a test sets it).
    server_nonce: String,
}

/// One step's outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this and wait for the next client message.
    Continue(Vec<u8>),
    /// Authenticated as this user; send the last message.
    Done { user: String, response: Vec<u8> },
    /// Authentication failed (the reason, for the log and the client).
    Failed(String),
}

impl Server {
    pub fn new(hash: Hash) -> Server {
        Server::with_nonce(hash, B64.encode(random_bytes(18)))
    }

    /// With a fixed server nonce (for the RFC's test vectors).
    pub fn with_nonce(hash: Hash, server_nonce: String) -> Server {
        Server {
            hash,
            state: State::First,
            server_nonce,
        }
    }

    /// Takes the client's next message; `lookup` finds a user's stored credential.
    pub fn step(&mut self, message: &[u8], lookup: impl Fn(&str) -> Option<Credential>) -> Step {
        let Ok(message) = std::str::from_utf8(message) else {
            return self.fail("SCRAM message is not UTF-8");
        };
        match std::mem::replace(&mut self.state, State::Done) {
            State::First => self.first(message, lookup),
            State::Final {
                user,
                credential,
                client_first_bare,
                server_first,
                nonce,
            } => self.last(
                message,
                user,
                credential,
                &client_first_bare,
                &server_first,
                &nonce,
            ),
            State::Done => self.fail("SCRAM exchange already finished"),
        }
    }

    fn fail(&mut self, why: &str) -> Step {
        self.state = State::Done;
        Step::Failed(why.to_string())
    }

    fn first(&mut self, message: &str, lookup: impl Fn(&str) -> Option<Credential>) -> Step {
        // gs2-header: channel binding flag, optional authzid.
        let mut parts = message.splitn(3, ',');
        let (Some(cbind), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return self.fail("malformed SCRAM client-first message");
        };
        if cbind.starts_with("p=") {
            return self.fail("SCRAM channel binding is not supported");
        }
        if cbind != "n" && cbind != "y" {
            return self.fail("malformed SCRAM gs2 header");
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = decode_saslname(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                client_nonce = Some(v.to_string());
            } else if attr.starts_with("m=") {
                return self.fail("SCRAM mandatory extensions are not supported");
            }
            // Other attributes (Kafka's extensions such as tokenauth) are ignored.
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return self.fail("SCRAM client-first lacks n= or r=");
        };
        if client_nonce.is_empty() || client_nonce.contains(',') {
            return self.fail("bad SCRAM client nonce");
        }
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if decode_saslname(authzid).as_deref() != Some(user.as_str()) {
                return self.fail("SCRAM authorization id differs from the user name");
            }
        } else if !authzid.is_empty() {
            return self.fail("malformed SCRAM gs2 header");
        }
        let Some(credential) = lookup(&user) else {
            return self.fail(&format!(
                "no {} credential for user {user:?}",
                self.hash.mechanism()
            ));
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let response = server_first.clone().into_bytes();
        self.state = State::Final {
            user,
            credential,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        };
        Step::Continue(response)
    }

    fn last(
        &mut self,
        message: &str,
        user: String,
        credential: Credential,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
    ) -> Step {
        let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
            return self.fail("SCRAM client-final lacks a proof");
        };
        let mut channel = None;
        let mut got_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                channel = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                got_nonce = Some(v);
            }
        }
        // Without channel binding, c= is the base64 of the gs2 header "n,," or "y,,"
        // (or with an authzid, which first() checked equals the user).
        let channel_ok = channel
            .and_then(|c| B64.decode(c).ok())
            .is_some_and(|c| c.starts_with(b"n,") || c.starts_with(b"y,"));
        if !channel_ok {
            return self.fail("bad SCRAM channel binding attribute");
        }
        // librdkafka before 2.6.1 (kcat 1.7 and the Debian/Ubuntu packages among them)
        // sends its own nonce again in front of the combined one (librdkafka #4895);
        // Kafka 3.8.1 to 3.9 accepted that (`endsWith`). Strand accepts exactly that form
        // besides the RFC's: the server nonce must still be echoed whole.
        let client_nonce = nonce.strip_suffix(self.server_nonce.as_str()).unwrap_or("");
        let echoed = got_nonce == Some(nonce)
            || got_nonce.is_some_and(|got| {
                got.len() == client_nonce.len() + nonce.len()
                    && got.starts_with(client_nonce)
                    && got.ends_with(nonce)
            });
        if !echoed {
            return self.fail("SCRAM nonce mismatch");
        }
        let Ok(proof) = B64.decode(proof) else {
            return self.fail("SCRAM proof is not base64");
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = self
            .hash
            .hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return self.fail("invalid credentials");
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&self.hash.h(&client_key), &credential.stored_key) {
            return self.fail("invalid credentials");
        }
        let server_signature = self
            .hash
            .hmac(&credential.server_key, auth_message.as_bytes());
        self.state = State::Done;
        Step::Done {
            user,
            response: format!("v={}", B64.encode(server_signature)).into_bytes(),
        }
    }
}

/// The client side (the admin commands' SCRAM login): the client-final message answering
/// `server_first`, and the server-final message to expect. Err if the server's message
/// is malformed or its nonce does not extend the client's.
pub fn client_final(
    hash: Hash,
    password: &str,
    client_first_bare: &str,
    server_first: &str,
) -> Result<(String, Vec<u8>), String> {
    let mut salt = None;
    let mut iterations = 0;
    let mut nonce = "";
    for attr in server_first.split(',') {
        if let Some(v) = attr.strip_prefix("s=") {
            salt = Some(B64.decode(v).map_err(|e| format!("bad salt: {e}"))?);
        } else if let Some(v) = attr.strip_prefix("i=") {
            iterations = v.parse().map_err(|e| format!("bad iteration count: {e}"))?;
        } else if let Some(v) = attr.strip_prefix("r=") {
            nonce = v;
        } else if let Some(v) = attr.strip_prefix("e=") {
            return Err(format!("the server refused: {v}"));
        }
    }
    let client_nonce = client_first_bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .unwrap_or_default();
    if client_nonce.is_empty() || !nonce.starts_with(client_nonce) || nonce == client_nonce {
        return Err("the server's nonce does not extend ours".into());
    }
    let salt = salt.ok_or("no salt")?;
    if !(ITERATIONS_MIN..=ITERATIONS_MAX * 16).contains(&iterations) {
        return Err(format!("iteration count {iterations} out of range"));
    }
    let salted = hash.hi(password.as_bytes(), &salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    let stored_key = hash.h(&client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hash.hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = hash.hmac(&salted, b"Server Key");
    let expected = hash.hmac(&server_key, auth_message.as_bytes());
    Ok((
        format!("{without_proof},p={}", B64.encode(proof)),
        format!("v={}", B64.encode(expected)).into_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: the SCRAM-SHA-256 exchange, byte for byte.
    #[test]
    fn rfc7677_vectors() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = Credential::new(Hash::Sha256, b"pencil", &salt, 4096);
        let mut server =
            Server::with_nonce(Hash::Sha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_string());
        let lookup = |u: &str| (u == "user").then(|| credential.clone());
        let first = server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", lookup);
        assert_eq!(
            first,
            Step::Continue(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let last = server.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            lookup,
        );
        assert_eq!(
            last,
            Step::Done {
                user: "user".into(),
                response: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
    }

    /// RFC 5802 section 5 (SCRAM-SHA-1 there): the same exchange shape with SHA-512, and a
    /// wrong password or a tampered proof fails.
    #[test]
    fn sha512_round_trip_and_wrong_password() {
        for hash in [Hash::Sha256, Hash::Sha512] {
            let credential = Credential::new(hash, b"secret", &random_bytes(24), 4096);
            assert!(credential.matches(hash, b"secret"));
            assert!(!credential.matches(hash, b"Secret"));
            for (password, ok) in [("secret", true), ("wrong", false)] {
                let mut server = Server::new(hash);
                let lookup = |u: &str| (u == "a,b=c").then(|| credential.clone());
                let bare = "n=a=2Cb=3Dc,r=clientnonce";
                let Step::Continue(server_first) =
                    server.step(format!("n,,{bare}").as_bytes(), lookup)
                else {
                    panic!("first step failed")
                };
                let server_first = String::from_utf8(server_first).unwrap();
                let (last, expected) = client_final(hash, password, bare, &server_first).unwrap();
                match server.step(last.as_bytes(), lookup) {
                    Step::Done { user, response } => {
                        assert!(ok);
                        assert_eq!(user, "a,b=c");
                        assert_eq!(response, expected);
                    }
                    Step::Failed(why) => {
                        assert!(!ok, "{why}");
                        assert_eq!(why, "invalid credentials");
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    /// librdkafka before 2.6.1 echoes `r=CNONCE` + the combined nonce: accepted; any
    /// other nonce (the server's part missing or changed) is refused.
    #[test]
    fn old_librdkafka_nonce_is_accepted_and_others_are_not() {
        let hash = Hash::Sha256;
        let salt = random_bytes(16);
        let credential = Credential::new(hash, b"pw", &salt, 4096);
        let salted = hash.hi(b"pw", &salt, 4096);
        let client_key = hash.hmac(&salted, b"Client Key");
        let cnonce = "-=~abc";
        for (echo, ok) in [
            (format!("{cnonce}{cnonce}SNONCE"), true),
            (format!("{cnonce}SNONCE"), true),
            (format!("x{cnonce}SNONCE"), false),
            (format!("{cnonce}{cnonce}SNONCf"), false),
            (cnonce.to_string(), false),
        ] {
            let mut server = Server::with_nonce(hash, "SNONCE".into());
            let lookup = |u: &str| (u == "u").then(|| credential.clone());
            let bare = format!("n=u,r={cnonce}");
            let Step::Continue(first) = server.step(format!("n,,{bare}").as_bytes(), lookup) else {
                panic!("first step failed")
            };
            let server_first = String::from_utf8(first).unwrap();
            let without_proof = format!("c=biws,r={echo}");
            let auth = format!("{bare},{server_first},{without_proof}");
            let signature = hash.hmac(&hash.h(&client_key), auth.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let last = format!("{without_proof},p={}", B64.encode(proof));
            let done = matches!(server.step(last.as_bytes(), lookup), Step::Done { .. });
            assert_eq!(done, ok, "{echo}");
        }
    }

    #[test]
    fn unknown_user_and_bad_messages_fail() {
        let mut server = Server::new(Hash::Sha512);
        assert!(matches!(
            server.step(b"n,,n=nobody,r=x", |_| None),
            Step::Failed(_)
        ));
        for bad in [
            &b"garbage"[..],
            b"p=tls-unique,,n=u,r=x",
            b"n,,r=x",
            b"n,a=other,n=u,r=x",
        ] {
            let mut server = Server::new(Hash::Sha512);
            let c = Credential::new(Hash::Sha512, b"p", b"salt", 4096);
            assert!(
                matches!(server.step(bad, |_| Some(c.clone())), Step::Failed(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
