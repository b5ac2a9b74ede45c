//! Who an MQTT client is, from its CONNECT: the password carries an OIDC access token
//! (validated exactly as a Kafka OAUTHBEARER token), or, where the listener offers PLAIN, a
//! configured user's password; without a password, `ANONYMOUS` where the listener allows it.
//! The username may have to match the token (`[mqtt] username`).

use std::time::{Duration, Instant, SystemTime};

use crate::{
    config::{Listener, UsernameRule},
    identity::token_sha256,
    mqtt::codec::Connect,
    policy::ANONYMOUS,
    proxy::auth::{Authenticator, Identity},
};

/// A successful login.
pub(super) struct LoggedIn {
    pub identity: Identity,
    /// When the session must end: the token's expiry, capped by the maximum lifetime.
    pub expires: Option<Instant>,
    pub session_expires: Option<SystemTime>,
    pub token_sha256: Option<String>,
    /// The token's `client_id`/`azp`, for the audit event.
    pub token_client_id: Option<String>,
}

/// A refused login: what the audit trail says, and the mechanism tried.
pub(super) struct Refused {
    pub mechanism: &'static str,
    pub reason: &'static str,
    pub detail: String,
    pub token_sha256: Option<String>,
}

pub(super) async fn login(
    authenticator: &Authenticator,
    listener: &Listener,
    username_rule: UsernameRule,
    connect: &Connect,
) -> Result<LoggedIn, Refused> {
    let offers = |m: &str| listener.sasl_mechanisms.iter().any(|o| o == m);
    let password = connect
        .password
        .as_ref()
        .map(|p| std::str::from_utf8(p).map(str::trim));
    let max = authenticator.max_session_lifetime();
    match password {
        None => {
            if listener.allow_anonymous {
                return Ok(LoggedIn {
                    identity: Identity {
                        principal: ANONYMOUS.into(),
                        groups: Vec::new(),
                        issuer: None,
                        mechanism: "ANONYMOUS",
                    },
                    expires: None,
                    session_expires: None,
                    token_sha256: None,
                    token_client_id: None,
                });
            }
            Err(refused(
                "NONE",
                "no_credentials",
                "this listener needs a token in the CONNECT password",
            ))
        }
        Some(Err(_)) => Err(refused(
            "NONE",
            "bad_password",
            "the CONNECT password is not UTF-8 text (a token or a password)",
        )),
        Some(Ok(text)) if offers("OAUTHBEARER") && looks_like_jwt(text) => {
            let token = match authenticator.validate_token(text).await {
                Ok(token) => token,
                Err(e) => {
                    return Err(Refused {
                        mechanism: "OAUTHBEARER",
                        reason: e.reason(),
                        detail: e.to_string(),
                        token_sha256: Some(token_sha256(text)),
                    })
                }
            };
            let wanted = match username_rule {
                UsernameRule::Any => None,
                UsernameRule::Principal => Some(Some(token.principal.clone())),
                UsernameRule::Subject => Some(token.subject.clone()),
                UsernameRule::ClientId => Some(token.client_id.clone()),
            };
            if let Some(wanted) = wanted {
                if wanted.is_none() || connect.username.as_deref() != wanted.as_deref() {
                    return Err(Refused {
                        mechanism: "OAUTHBEARER",
                        reason: "username_mismatch",
                        detail: format!(
                            "the CONNECT username {:?} is not the token's {}",
                            connect.username.as_deref().unwrap_or(""),
                            rule_name(username_rule)
                        ),
                        token_sha256: Some(token.token_sha256),
                    });
                }
            }
            let now = SystemTime::now();
            let remaining = token
                .expires_at
                .duration_since(now)
                .unwrap_or_default()
                .min(max)
                .max(Duration::from_millis(1));
            Ok(LoggedIn {
                identity: Identity {
                    principal: token.principal,
                    groups: token.groups,
                    issuer: Some(token.issuer),
                    mechanism: "OAUTHBEARER",
                },
                expires: Some(Instant::now() + remaining),
                session_expires: Some(now + remaining),
                token_sha256: Some(token.token_sha256),
                token_client_id: token.client_id,
            })
        }
        Some(Ok(text)) if offers("PLAIN") => {
            let Some(username) = connect.username.as_deref() else {
                return Err(refused(
                    "PLAIN",
                    "no_username",
                    "a password without a username",
                ));
            };
            match authenticator.verify_password(username, text) {
                Ok(identity) => {
                    let now = SystemTime::now();
                    Ok(LoggedIn {
                        identity,
                        expires: Some(Instant::now() + max),
                        session_expires: Some(now + max),
                        token_sha256: None,
                        token_client_id: None,
                    })
                }
                Err(reason) => Err(refused(
                    "PLAIN",
                    reason,
                    "authentication failed: invalid username or password",
                )),
            }
        }
        Some(Ok(_)) => Err(refused(
            "OAUTHBEARER",
            "malformed_token",
            "the CONNECT password is not a JWT access token",
        )),
    }
}

fn refused(mechanism: &'static str, reason: &'static str, detail: &str) -> Refused {
    Refused {
        mechanism,
        reason,
        detail: detail.to_owned(),
        token_sha256: None,
    }
}

/// Three base64url parts: a compact JWS. Anything else is a password.
fn looks_like_jwt(text: &str) -> bool {
    text.split('.').count() == 3
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

fn rule_name(rule: UsernameRule) -> &'static str {
    match rule {
        UsernameRule::Any => "anything",
        UsernameRule::Principal => "principal",
        UsernameRule::Subject => "subject (sub)",
        UsernameRule::ClientId => "client id (client_id/azp)",
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_jwt;

    #[test]
    fn tokens_are_told_from_passwords() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIi.c2ln"));
        assert!(!looks_like_jwt("correct horse battery staple"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
    }
}
