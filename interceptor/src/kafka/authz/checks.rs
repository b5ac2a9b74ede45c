//! Asking the session about the resources of one request.

use std::collections::HashMap;

use crate::policy::{AccessCheck, Check, Operation, Resource};

/// Asks the session once per distinct (operation, resource) of one request, in request order:
/// every answer is an audit event, and a request may name a resource many times. Names are
/// borrowed from the request; response-time checks with names from decoded answers keep
/// their own owned memo (`control::common::Ask`).
pub(crate) struct Checks<'c, 'n> {
    check: &'c dyn AccessCheck,
    seen: HashMap<(Operation, Resource<'n>), Check>,
}

impl<'c, 'n> Checks<'c, 'n> {
    pub fn new(check: &'c dyn AccessCheck) -> Self {
        Self {
            check,
            seen: HashMap::new(),
        }
    }

    pub fn check(&mut self, op: Operation, resource: Resource<'n>) -> Check {
        let check = self.check;
        *self
            .seen
            .entry((op, resource))
            .or_insert_with(|| check.check(op, resource))
    }

    pub fn topic(&mut self, op: Operation, name: &'n str) -> Check {
        self.check(op, Resource::topic(name))
    }
}
