//! The MQTT side of the end-to-end tests: mosquitto as the broker, with a password file so
//! that only the interceptor's own login works, and the paho-mqtt client script.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::{accepting, netns_command, peers, run_with_timeout, tail, BrokerUser, Netns, Proc};

/// mosquitto from Debian.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
pub const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
pub const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";
pub const MOSQUITTO_SUB: &str = "/usr/bin/mosquitto_sub";

/// mosquitto on `addr` in the namespace, refusing every login but `user`'s (anonymous
/// clients included), with in-memory persistence of sessions (queued QoS 1/2 messages of a
/// disconnected persistent session survive while the broker runs). Returns once the port
/// accepts connections.
pub fn start_mosquitto(
    ns: &Netns,
    addr: SocketAddr,
    work: &Path,
    user: &BrokerUser,
) -> Result<Proc> {
    for program in [MOSQUITTO, MOSQUITTO_PASSWD] {
        if !Path::new(program).exists() {
            bail!("{program} is missing: run `cargo xtask deps` first");
        }
    }
    let dir = work.join(format!("mosquitto-{}", addr.port()));
    fs::create_dir_all(&dir)?;
    let passwords = dir.join("passwords");
    let out = Command::new(MOSQUITTO_PASSWD)
        .arg("-c")
        .arg("-b")
        .arg(&passwords)
        .args([&user.name, &user.password])
        .output()
        .context("running mosquitto_passwd")?;
    if !out.status.success() {
        bail!("mosquitto_passwd: {}", String::from_utf8_lossy(&out.stderr));
    }
    let config = dir.join("mosquitto.conf");
    fs::write(
        &config,
        format!(
            "# Written by the test harness.\n\
             user root\n\
             persistence false\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             listener {port} {ip}\n\
             allow_anonymous false\n\
             password_file {passwords}\n\
             max_inflight_messages 100\n\
             max_queued_messages 10000\n",
            port = addr.port(),
            ip = addr.ip(),
            passwords = passwords.display()
        ),
    )?;
    let mut cmd = ns.command(MOSQUITTO);
    cmd.arg("-c").arg(&config);
    let log = dir.join("mosquitto.log");
    let proc = Proc::spawn("mosquitto", cmd, &log)?;
    accepting(ns, addr, proc, "mosquitto", Duration::from_secs(20))
}

/// Runs `tests/clients/mqtt_client.py <args>` in the namespace; its JSON summary.
pub fn mqtt_client(ns: &Netns, args: &[&str], timeout: Duration) -> Result<Value> {
    mqtt_client_at(ns.path(), args, timeout)
}

/// [`mqtt_client`] in the namespace at `netns` (for threads that do not own the [`Netns`]).
pub fn mqtt_client_at(netns: &Path, args: &[&str], timeout: Duration) -> Result<Value> {
    let peers = peers();
    let mut cmd = netns_command(netns, &peers.python);
    cmd.arg("-u")
        .arg(peers.clients.join("mqtt_client.py"))
        .args(args);
    let done = run_with_timeout(cmd, timeout)
        .with_context(|| format!("mqtt_client.py {}", args.join(" ")))?;
    let last = done.stdout.lines().rev().find(|l| !l.trim().is_empty());
    match (
        done.status.success(),
        last.and_then(|l| serde_json::from_str::<Value>(l).ok()),
    ) {
        (true, Some(v)) => Ok(v),
        (ok, _) => Err(anyhow!(
            "mqtt_client.py {} {}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            args.join(" "),
            if ok { "printed no summary" } else { "failed" },
            done.status,
            tail(&done.stdout, 20),
            tail(&done.stderr, 40)
        )),
    }
}

/// Writes a token (or password) to a file the client reads, so it is not on a command line.
pub fn secret_file(work: &Path, name: &str, secret: &str) -> PathBuf {
    let path = work.join(format!("{name}.secret"));
    fs::write(&path, secret).expect("writing a secret file");
    path
}
