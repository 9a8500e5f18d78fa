//! Client security: TLS for the SSL and SASL_SSL listeners ([`tls`]), SASL
//! authentication ([`sasl`], [`scram`]) against the users file ([`users`]), and
//! authorization by ACLs ([`acl`]).
//! docs/security.md is the operator's guide.

pub mod acl;
pub mod sasl;
pub mod scram;
pub mod tls;
pub mod users;
