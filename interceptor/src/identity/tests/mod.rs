//! End-to-end tests of the validator against issuers served over HTTP on 127.0.0.1, with
//! keys generated here. Unit tests of single modules live next to them.

mod refresh;
mod support;
mod validation;
