//! STUB: filled in by its owner.

use super::{table::ApiAccess, AuthzError, Context, Outcome, Request};

pub const TABLE: &[ApiAccess] = &[];

/// `None` when the api key is not this module's.
pub(super) fn authorize(
    _request: &Request<'_>,
    _ctx: &mut Context<'_>,
) -> Option<Result<Outcome, AuthzError>> {
    None
}
