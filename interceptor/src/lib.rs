//! interceptor: a host daemon that steers broker-bound flows through a security check.
pub mod config;
pub mod kafka;
