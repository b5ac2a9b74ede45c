//! interceptor: a host daemon that makes every Kafka request on a broker node pass through a
//! security check, with no change to any client.
//!
//! Layout:
//! - [`ebpf`]: load, attach, pin the kernel steering program; typed access to its maps.
//! - [`proxy`]: accept, one session per connection, upstream with exemption, relay.
//! - [`kafka`]: framing, headers, in-flight queue, the bodies the data path needs.
//! - [`filter`]: the filter chain and its verdicts.
//! - [`identity`]: OIDC token validation and principals.
//! - [`policy`]: the policy directory and decisions; [`kafka::authz`] applies them per request.
//! - [`audit`]: audit events and sinks.
//! - [`config`]: the TOML configuration.
//! - [`daemon`]: wires the above together for `interceptor run`.
//! - [`admin`]: the local admin socket behind `interceptor status`.
pub mod addr;
pub mod admin;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod detokenize;
pub mod ebpf;
pub mod filter;
pub mod identity;
pub mod kafka;
pub mod mask;
pub mod metrics;
pub mod mqtt;
pub mod policy;
pub mod proxy;
pub mod recording;
pub mod vault;
