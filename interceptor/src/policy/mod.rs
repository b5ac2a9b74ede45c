//! Policy: who may do what to which resource, from a directory of YAML files.
//!
//! Layout:
//! - [`access`](self): the vocabulary shared with the protocol layers (operations, resources,
//!   subjects, checks).
//! - `yaml`: a YAML tree with line and column on every node.
//! - `schema`: the file format (documented in `docs/policy.md`), validated with positions.
//! - `glob`: name patterns; `content`: forbidden-content matchers.
//! - `model`: parsed rules and what each matches; `lint`: checks on the whole directory.
//! - `masking_schema`: the `masking:` section, compiled by the [`mask`](crate::mask) engine;
//!   `masking`: masking rules and who they apply to.
//! - `set`: the compiled [`PolicySet`], its version and its decisions.
//! - [`cli`]: `interceptor policy check` and `interceptor policy explain`.
//! - [`watch`]: the set in force, reloaded when the directory changes.

mod access;
pub mod cli;
mod content;
mod error;
mod glob;
mod lint;
mod masking;
mod masking_schema;
mod model;
mod schema;
mod set;
pub mod watch;
mod yaml;

#[cfg(test)]
mod tests;

pub use access::{AccessCheck, Check, Operation, Resource, ResourceKind, Subject, CLUSTER_NAME};
pub use content::ContentRule;
pub use error::{PolicyError, PolicyErrors};
pub use glob::Glob;
pub use masking::{FetchMasking, MaskStage, MaskingRule, RevealRefusal};
pub use masking_schema::{MAX_MASK_DETECTORS, MAX_MASK_FIELDS};
pub use model::{Effect, RuleRef, ANONYMOUS};
pub use set::{
    Decision, Explanation, PolicySet, SubscribeDecision, TopicLimits, MAX_FILES, MAX_FILE_BYTES,
    MAX_MASKING_RULES, MAX_RULES,
};
