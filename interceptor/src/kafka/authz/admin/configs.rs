//! Configs, decided per resource: DescribeConfigs (`describe-configs`), AlterConfigs and
//! IncrementalAlterConfigs (`alter-configs`). A config resource is a topic, a group, or one
//! of the cluster's (a broker, a broker's loggers, client metrics subscriptions), as Kafka's
//! own authorizer maps them.

use kafka_protocol::messages::{
    alter_configs_response, describe_configs_response::DescribeConfigsResult,
    incremental_alter_configs_response, AlterConfigsResponse, DescribeConfigsResponse,
    IncrementalAlterConfigsResponse,
};

use super::partial::{
    decide, items, list_response, min_bytes, name, owned, reader, skip_array, Checks, Items,
    ListResponse, Refusal, Refusals, INVALID_REQUEST,
};
use crate::{
    kafka::{
        authz::{AuthzError, Context, Outcome, Request},
        wire::Reader,
        HeaderError,
    },
    policy::{Operation, Resource},
};

list_response! {
    DescribeConfigsResponse => results: DescribeConfigsResult,
    AlterConfigsResponse => responses: alter_configs_response::AlterConfigsResourceResponse,
    IncrementalAlterConfigsResponse =>
        responses: incremental_alter_configs_response::AlterConfigsResourceResponse,
}

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const BROKER_LOGGER: i8 = 8;
const CLIENT_METRICS: i8 = 16;
const GROUP: i8 = 32;

/// One resource of a configs request.
#[derive(Debug, Clone, Copy)]
struct ConfigResource<'f> {
    resource_type: i8,
    name: &'f str,
}

impl<'f> ConfigResource<'f> {
    /// What the policy decides on; `None` for a type Kafka does not know (it answers those
    /// INVALID_REQUEST).
    fn resource(&self) -> Option<Resource<'f>> {
        match self.resource_type {
            TOPIC => Some(Resource::topic(self.name)),
            GROUP => Some(Resource::group(self.name)),
            BROKER | BROKER_LOGGER | CLIENT_METRICS => Some(Resource::cluster()),
            _ => None,
        }
    }

    fn refusal(&self, checks: &mut Checks<'_, 'f>, op: Operation) -> Option<Refusal> {
        match self.resource() {
            Some(resource) => checks.refusal(op, resource),
            None => Some(Refusal {
                code: INVALID_REQUEST,
                message: "Unexpected config resource type",
            }),
        }
    }
}

/// The answer for a refused resource: the three keys' result types differ only by name.
macro_rules! refused {
    ($result:ty) => {
        |refusal: Refusal, resource_type: i8, name: &str| {
            <$result>::default()
                .with_error_code(refusal.code)
                .with_error_message(refusal.message())
                .with_resource_type(resource_type)
                .with_resource_name(owned(name))
        }
    };
}

/// DescribeConfigs v1+, AlterConfigs or IncrementalAlterConfigs, as `kind` says.
pub(super) fn configs(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
    kind: Kind,
) -> Result<Outcome, AuthzError> {
    use alter_configs_response::AlterConfigsResourceResponse as Altered;
    use incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementallyAltered;
    match kind {
        Kind::Describe => per_resource::<DescribeConfigsResponse>(
            request,
            ctx,
            kind,
            refused!(DescribeConfigsResult),
        ),
        Kind::Alter => per_resource::<AlterConfigsResponse>(request, ctx, kind, refused!(Altered)),
        Kind::IncrementalAlter => per_resource::<IncrementalAlterConfigsResponse>(
            request,
            ctx,
            kind,
            refused!(IncrementallyAltered),
        ),
    }
}

/// Checks each resource for the kind's operation; `refused` answers a refused one.
fn per_resource<R: ListResponse>(
    request: &Request<'_>,
    ctx: &mut Context<'_>,
    kind: Kind,
    refused: fn(Refusal, i8, &str) -> R::Item,
) -> Result<Outcome, AuthzError> {
    let op = match kind {
        Kind::Describe => Operation::DescribeConfigs,
        Kind::Alter | Kind::IncrementalAlter => Operation::AlterConfigs,
    };
    let resources = parse(request, kind).map_err(|e| request.malformed(e))?;
    let mut checks = Checks::new(ctx.check.as_ref());
    let items = resources.map(|res| {
        res.refusal(&mut checks, op)
            .map(|refusal| refused(refusal, res.resource_type, res.name))
    });
    decide::<R>(request, items)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Describe,
    Alter,
    IncrementalAlter,
}

/// The three requests share their shape: resources (type, name, then a list that differs),
/// then one or two booleans.
fn parse<'f>(request: &Request<'f>, kind: Kind) -> Result<Items<ConfigResource<'f>>, HeaderError> {
    let (frame, flexible) = (&request.frame[..], request.flexible());
    let version = request.header.api_version;
    let mut r = reader(request)?;
    let resources = items(
        &mut r,
        flexible,
        min_bytes(flexible, 7, 4),
        "resources",
        |r| {
            let resource_type = r.i8("resource type")?;
            let name = name(r, frame, flexible, "resource name")?;
            match kind {
                Kind::Describe => {
                    let keys =
                        r.nullable_count(flexible, min_bytes(flexible, 2, 1), "config keys")?;
                    for _ in 0..keys.unwrap_or(0) {
                        r.string(flexible, "config key")?;
                    }
                }
                Kind::Alter | Kind::IncrementalAlter => {
                    skip_array(r, flexible, min_bytes(flexible, 4, 3), "configs", |r| {
                        alterable_config(r, flexible, kind)
                    })?;
                }
            }
            r.tagged(flexible, "resource tagged fields")?;
            Ok(ConfigResource {
                resource_type,
                name,
            })
        },
    )?;
    match kind {
        Kind::Describe => {
            r.i8("include synonyms")?;
            if version >= 3 {
                r.i8("include documentation")?;
            }
        }
        Kind::Alter | Kind::IncrementalAlter => {
            r.i8("validate only")?;
        }
    }
    r.tagged(flexible, "tagged fields")?;
    Ok(resources)
}

fn alterable_config(r: &mut Reader<'_>, flexible: bool, kind: Kind) -> Result<(), HeaderError> {
    r.string(flexible, "config name")?;
    if kind == Kind::IncrementalAlter {
        r.i8("config operation")?;
    }
    r.nullable_str(flexible, "config value")?;
    r.tagged(flexible, "config tagged fields")
}
