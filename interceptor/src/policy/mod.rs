//! Policy: who may do what to which resource, from a directory of YAML files.

mod access;

pub use access::{
    AccessCheck, Check, Operation, Resource, ResourceKind, Subject, CLUSTER_NAME,
};
