//! JSON without a DOM: one streaming pass that validates the text (as strictly as serde_json),
//! tracks where it is against the rule's field paths, and reports leaves and selected subtrees
//! by byte range so the caller can copy everything else unchanged.

pub mod scan;
pub mod text;

pub use scan::{walk, Leaf, Paths, Visit, MAX_DEPTH};
