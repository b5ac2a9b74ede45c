//! The real OIDC provider (panva oidc-provider on node) the identity tests use.
//!
//! [`Idp::start`] runs `node tests/idp/server.mjs CONFIG.json` inside a network namespace
//! (`oidc-provider` itself is installed under `.peers/idp` by `cargo xtask deps`). The provider
//! serves the client-credentials grant only and issues RS256 JWT access tokens:
//!
//! - `iss` = [`Idp::issuer`] (`http://<addr>`), `aud` = [`AUDIENCE`] (or the one given to
//!   [`Idp::start_with_audience`]), `sub` and `client_id` = the client id, `scope` = [`SCOPE`],
//!   `groups` = the client's [`IdpClient::groups`], `exp - iat` = its
//!   [`IdpClient::access_token_ttl_secs`]; header `kid` = [`Idp::signing_kid`], `typ` `at+jwt`.
//! - discovery at `/.well-known/openid-configuration`, keys at `/jwks` ([`Idp::jwks_uri`]),
//!   tokens at `/token` ([`Idp::token_endpoint`]), client secrets by HTTP basic
//!   (`client_secret_basic`, as librdkafka sends them) or in the form (`client_secret_post`).
//!
//! Keys: the first start generates one RSA key (`key-1`). Every start writes the private key set
//! to `idp-keys.json` in the work dir; the harness keeps it and hands it to the next start, so
//! a restart keeps the keys. Rotation as a relying party sees it:
//!
//! 1. [`Idp::rotate`]: restart on the same address with a fresh key `key-<n+1>` first: tokens
//!    are signed with it, `/jwks` publishes it and every older key (`[new, old]`); tokens issued
//!    before stay verifiable.
//! 2. [`Idp::retire_old`]: restart publishing only the newest key: tokens signed with an older
//!    key no longer verify against `/jwks`.
//!
//! HTTP calls ([`Idp::fetch_token`], [`Idp::jwks`], …) are made from inside a namespace with a
//! plain `TcpStream`, so they need neither curl nor an HTTP crate. [`decode_jwt`] reads a token's
//! header and payload (without checking the signature) for assertions.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::{netns_command, repo_root, Netns, Proc};

/// The `aud` of the tokens unless [`Idp::start_with_audience`] says otherwise.
pub const AUDIENCE: &str = "kafka-broker";
/// The scope every client is registered with (and gets when it asks for none).
pub const SCOPE: &str = "kafka";
/// How long node may take to say `idp ready`.
pub const IDP_READY_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The version `cargo xtask deps` installs (pinned in `tests/idp/package.json`).
pub const OIDC_PROVIDER_VERSION: &str = "9.13.3";

/// Where `cargo xtask deps` installs `oidc-provider`: `$INTERCEPTOR_PEERS/idp`, else
/// `.peers/idp` in the repository.
pub fn idp_dir() -> PathBuf {
    std::env::var_os("INTERCEPTOR_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".peers"))
        .join("idp")
}

/// `tests/idp/server.mjs`.
pub fn server_script() -> PathBuf {
    repo_root().join("tests/idp/server.mjs")
}

/// `$INTERCEPTOR_NODE`, else the first `node` on `PATH`, else `/usr/bin/node`.
pub fn node_bin() -> PathBuf {
    if let Some(node) = std::env::var_os("INTERCEPTOR_NODE") {
        return PathBuf::from(node);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("node"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/node"))
}

/// A client registered at the provider (client-credentials grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpClient {
    pub client_id: String,
    pub client_secret: String,
    /// The `groups` claim of its tokens.
    pub groups: Vec<String>,
    /// `exp - iat` of its tokens.
    pub access_token_ttl_secs: u64,
}

impl IdpClient {
    /// A client whose tokens live 300 s.
    pub fn new(client_id: &str, client_secret: &str, groups: &[&str]) -> IdpClient {
        IdpClient {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            access_token_ttl_secs: 300,
        }
    }

    /// The same client with tokens that live `secs` seconds.
    pub fn ttl(mut self, secs: u64) -> IdpClient {
        self.access_token_ttl_secs = secs;
        self
    }
}

/// How a client presents its secret at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` (`client_secret_basic`; what librdkafka does).
    Basic,
    /// `client_id` and `client_secret` in the form (`client_secret_post`).
    Post,
}

/// The provider, running (or stopped) on one address in one namespace. Killed on drop.
pub struct Idp {
    netns: PathBuf,
    addr: SocketAddr,
    work: PathBuf,
    audience: String,
    clients: Vec<IdpClient>,
    /// The private JWKs of the current (last) run; the first signs.
    keys: Vec<Value>,
    /// Keys generated so far (names the next one).
    generated: usize,
    proc: Option<Proc>,
    starts: usize,
}

impl Idp {
    /// Starts the provider on `addr` in `ns` with a fresh key, for these clients and the
    /// audience [`AUDIENCE`]; its config, key set and logs go to `work`. Returns once it says
    /// `idp ready`; fails with its log.
    pub fn start(ns: &Netns, addr: SocketAddr, work: &Path, clients: &[IdpClient]) -> Result<Idp> {
        Self::start_with_audience(ns, addr, work, clients, AUDIENCE)
    }

    /// [`Idp::start`] with another `aud` for the tokens.
    pub fn start_with_audience(
        ns: &Netns,
        addr: SocketAddr,
        work: &Path,
        clients: &[IdpClient],
        audience: &str,
    ) -> Result<Idp> {
        let mut idp = Idp {
            netns: ns.path().to_path_buf(),
            addr,
            work: work.to_path_buf(),
            audience: audience.to_string(),
            clients: clients.to_vec(),
            keys: Vec::new(),
            generated: 0,
            proc: None,
            starts: 0,
        };
        idp.launch(true)?;
        Ok(idp)
    }

    /// `http://<addr>`: the `iss` of the tokens.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer())
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `aud` of the tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn clients(&self) -> &[IdpClient] {
        &self.clients
    }

    /// The kids `/jwks` publishes, the signing one first.
    pub fn kids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The kid of the key that signs new tokens.
    pub fn signing_kid(&self) -> String {
        self.kids().into_iter().next().unwrap_or_default()
    }

    /// Gets an access token for a client (client_secret_basic), from inside `ns`.
    pub fn fetch_token(&self, ns: &Netns, client_id: &str, secret: &str) -> Result<String> {
        let (status, body) = self.request_token(ns, client_id, secret, ClientAuth::Basic)?;
        match body["access_token"].as_str() {
            Some(token) if status == 200 => Ok(token.to_string()),
            _ => bail!("token request for {client_id} answered {status}: {body}"),
        }
    }

    /// A client-credentials token request from inside `ns`: the HTTP status and the JSON body
    /// (`access_token`, `expires_in`, … or `error`, `error_description`).
    pub fn request_token(
        &self,
        ns: &Netns,
        client_id: &str,
        secret: &str,
        auth: ClientAuth,
    ) -> Result<(u16, Value)> {
        let mut form = String::from("grant_type=client_credentials");
        let mut headers = Vec::new();
        match auth {
            ClientAuth::Basic => {
                // RFC 6749 2.3.1: both parts are form-encoded before base64.
                let pair = format!("{}:{}", form_encode(client_id), form_encode(secret));
                headers.push(format!(
                    "Authorization: Basic {}",
                    base64_encode(pair.as_bytes())
                ));
            }
            ClientAuth::Post => {
                form.push_str(&format!(
                    "&client_id={}&client_secret={}",
                    form_encode(client_id),
                    form_encode(secret)
                ));
            }
        }
        headers.push("Content-Type: application/x-www-form-urlencoded".to_string());
        let (status, body) = http(ns, self.addr, "POST", "/token", &headers, &form)?;
        let json = serde_json::from_str(&body)
            .with_context(|| format!("token endpoint answered {status} with {body:?}"))?;
        Ok((status, json))
    }

    /// `GET /jwks` from inside `ns`.
    pub fn jwks(&self, ns: &Netns) -> Result<Value> {
        self.get_json(ns, "/jwks")
    }

    /// The kids `GET /jwks` lists now, in order.
    pub fn published_kids(&self, ns: &Netns) -> Result<Vec<String>> {
        let jwks = self.jwks(ns)?;
        let keys = jwks["keys"]
            .as_array()
            .with_context(|| format!("no keys in {jwks}"))?;
        Ok(keys
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_string())
            .collect())
    }

    /// `GET /.well-known/openid-configuration` from inside `ns`.
    pub fn discovery(&self, ns: &Netns) -> Result<Value> {
        self.get_json(ns, "/.well-known/openid-configuration")
    }

    fn get_json(&self, ns: &Netns, path: &str) -> Result<Value> {
        let (status, body) = http(ns, self.addr, "GET", path, &[], "")?;
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path}: {body:?}"))
    }

    /// Key rotation, step 1: restarts on the same address with a new key that signs from now
    /// on; `/jwks` publishes it first and every older key after it.
    pub fn rotate(&mut self) -> Result<()> {
        self.stop();
        self.launch(true)
    }

    /// Key rotation, step 2: restarts publishing (and signing with) only the newest key.
    pub fn retire_old(&mut self) -> Result<()> {
        self.stop();
        self.keys.truncate(1);
        self.launch(false)
    }

    /// Starts it again after [`Idp::stop`] with the same keys and clients (to test an
    /// unreachable provider in between).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch(false)
    }

    /// SIGTERM (SIGKILL if it lingers); nothing listens on the address afterwards.
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            if let Err(e) = p.stop(Duration::from_secs(5)) {
                eprintln!("warning: {e:#}");
            }
        }
    }

    /// Whether the current run is alive.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// The log of the current (last) run.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }

    /// Writes the config, runs node, waits for `idp ready`, reads the key set back.
    fn launch(&mut self, new_key: bool) -> Result<()> {
        let node = node_bin();
        let script = server_script();
        let dir = idp_dir();
        let installed = dir.join("node_modules/oidc-provider/package.json");
        for path in [&node, &installed] {
            if !path.exists() {
                bail!(
                    "{} is missing: run `cargo xtask deps` first",
                    path.display()
                );
            }
        }
        self.starts += 1;
        let mut generate = Vec::new();
        if new_key {
            self.generated += 1;
            generate.push(format!("key-{}", self.generated));
        }
        let keys_out = self.work.join("idp-keys.json");
        let _ = fs::remove_file(&keys_out);
        let config = json!({
            "port": self.addr.port(),
            "host": self.addr.ip().to_string(),
            "issuer": self.issuer(),
            "audience": self.audience,
            "keys": { "keys": self.keys },
            "generate_keys": generate,
            "keys_out": keys_out,
            "install_dir": dir,
            "clients": self.clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "groups": c.groups,
                "access_token_ttl": c.access_token_ttl_secs,
                "scope": SCOPE,
            })).collect::<Vec<_>>(),
        });
        let config_path = self.work.join(format!("idp-{}.json", self.starts));
        fs::write(&config_path, serde_json::to_string_pretty(&config)?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut cmd = netns_command(&self.netns, &node);
        cmd.arg(&script).arg(&config_path).current_dir(&self.work);
        let log = self
            .work
            .join(format!("idp-{}-{}.log", self.addr.port(), self.starts));
        let mut proc = Proc::spawn("idp", cmd, &log)?;
        let ready = proc.wait_for_log("idp ready", IDP_READY_TIMEOUT);
        self.proc = Some(proc);
        ready.context("the OIDC provider did not become ready")?;
        let text = fs::read_to_string(&keys_out)
            .with_context(|| format!("reading the key set {}", keys_out.display()))?;
        let set: Value = serde_json::from_str(&text)?;
        self.keys = set["keys"]
            .as_array()
            .cloned()
            .filter(|k| !k.is_empty())
            .with_context(|| format!("no keys in {}", keys_out.display()))?;
        Ok(())
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }
}

/// The header and payload of a JWT (signature not checked).
pub fn decode_jwt(token: &str) -> Result<(Value, Value)> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a JWS compact token: {token:?}");
    };
    let part = |s: &str, what: &str| -> Result<Value> {
        let bytes = base64url_decode(s).with_context(|| format!("JWT {what}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("JWT {what} is not JSON"))
    };
    Ok((part(header, "header")?, part(payload, "payload")?))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (for the basic auth header).
fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// base64url without padding (JWT parts); padding is tolerated.
pub fn base64url_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => bail!("invalid base64url character {:?}", c as char),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// application/x-www-form-urlencoded for one value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.1 request over a connection made inside `ns`: the status and the body.
fn http(
    ns: &Netns,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: &str,
) -> Result<(u16, String)> {
    let mut stream = ns
        .connect(addr, HTTP_TIMEOUT)
        .with_context(|| format!("connecting to the OIDC provider at {addr}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    read_response(stream).with_context(|| format!("{method} http://{addr}{path}"))
}

fn read_response(mut stream: TcpStream) -> Result<(u16, String)> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| anyhow!("truncated chunk"))?;
        out.push_str(chunk);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_encode(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64url_decode("YQ").unwrap(), b"a");
        assert_eq!(base64url_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64url_decode("a+b").is_err());
    }

    #[test]
    fn decodes_a_jwt() {
        let token =
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImdyb3VwcyI6WyJyIl19.c2ln";
        let (header, payload) = decode_jwt(token).unwrap();
        assert_eq!(header["kid"], "k1");
        assert_eq!(payload["sub"], "alice");
        assert_eq!(payload["groups"][0], "r");
        assert!(decode_jwt("a.b").is_err());
    }

    #[test]
    fn form_encoding_and_chunks() {
        assert_eq!(form_encode("a b:c/d~"), "a%20b%3Ac%2Fd~");
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
    }
}
