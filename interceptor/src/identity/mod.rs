//! OIDC access-token validation: discovery, JWKS cache, claims to principal.
//!
//! Clients authenticate with SASL/OAUTHBEARER; the interceptor, not the broker, decides
//! whether the bearer token is genuine. [`TokenValidator`] holds the configured issuers and
//! their cached signing keys and turns a token into a [`ValidatedToken`] (principal, groups)
//! or a [`TokenError`] whose message can go back to the client and whose
//! [`reason`](TokenError::reason) goes to audit.
//!
//! - `settings`: the configuration, checked up front.
//! - `token`: the unverified first look that picks issuer and key.
//! - `http`, `discovery`, `jwks`: fetching and loading an issuer's keys.
//! - `keys`: the per-issuer key cache, refresh and on-demand refetch.
//! - `claims`: principal and groups from verified claims.
//! - `validate`: the validator tying these together.

mod claims;
mod discovery;
mod error;
mod http;
mod jwks;
mod keys;
mod settings;
mod token;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{IdentityConfigError, TokenError};
pub use validate::{token_sha256, TokenValidator, ValidatedToken};
