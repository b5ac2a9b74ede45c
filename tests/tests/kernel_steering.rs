//! Kernel steering, each test in its own network namespace with its own pin dir.
//!
//! A fake Kafka-framed server listens on 127.0.0.1:9092 and [::1]:9092 inside the namespace and
//! answers every request frame with `[len][correlation id][the peer address it saw, as text]`,
//! so a client learns whether it reached the server directly (the server saw the client's own
//! address) or through the interceptor (the server saw the daemon's exempt upstream socket).
//! Clients send client-telemetry requests (KIP-714), which the interceptor forwards without
//! reading or rewriting their answers, so the server's answer reaches them unchanged.
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): fails loudly without, unless
//! `INTERCEPTOR_SKIP_KERNEL_TESTS=1`.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use interceptor_e2e::{
    require_kernel, start_interceptor, wire, DaemonConfig, Interceptor, Netns, PinDir, WorkDir,
};
use serde_json::Value;

const V4: &str = "127.0.0.1:9092";
const V6: &str = "[::1]:9092";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connection attempt may hang before we call it dropped.
const DROP_TIMEOUT: Duration = Duration::from_secs(2);
const AUDIT_WAIT: Duration = Duration::from_secs(10);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

// ---------------------------------------------------------------------------------------------
// The fake broker

struct FakeBroker {
    /// Peer address of every connection it accepted.
    seen: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeBroker {
    /// Listens on `addrs` in the namespace and treats every connection as `behaviour` says.
    fn start(ns: &Netns, addrs: &[SocketAddr], behaviour: Behaviour) -> FakeBroker {
        let listeners: Vec<TcpListener> = ns.run(|| {
            addrs
                .iter()
                .map(|a| {
                    TcpListener::bind(a).unwrap_or_else(|e| panic!("fake broker bind {a}: {e}"))
                })
                .collect()
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = listeners
            .into_iter()
            .map(|listener| {
                listener.set_nonblocking(true).expect("nonblocking");
                let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
                std::thread::spawn(move || accept_loop(listener, seen, stop, behaviour))
            })
            .collect();
        FakeBroker {
            seen,
            stop,
            threads,
        }
    }

    fn seen(&self) -> Vec<SocketAddr> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    behaviour: Behaviour,
) {
    let mut held = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                seen.lock().expect("lock").push(peer);
                match behaviour {
                    Behaviour::Silent => held.push(stream),
                    Behaviour::Answer { padding } => {
                        std::thread::spawn(move || answer(stream, peer, padding));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// How the fake broker treats a connection.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Answers every request with [len][correlation id][peer address text][`padding` zeros].
    Answer { padding: usize },
    /// Reads requests but never answers nor closes (a broker busy with a long request, like a
    /// consumer group join).
    Silent,
}

const ANSWERS: Behaviour = Behaviour::Answer { padding: 0 };

/// Answers every request frame with [len][correlation id][peer address text][padding].
fn answer(mut stream: TcpStream, peer: SocketAddr, padding: usize) {
    use std::io::Write;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    while let Ok(request) = wire::read_frame(&mut stream) {
        if request.len() < 8 {
            return;
        }
        let mut body = request[4..8].to_vec(); // correlation id
        body.extend_from_slice(peer.to_string().as_bytes());
        body.resize(body.len() + padding, 0);
        if stream.write_all(&wire::frame(&body)).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A test's world

/// Drop order is field order: the daemon first, the namespace last.
struct World {
    daemon: Interceptor,
    server: FakeBroker,
    work: WorkDir,
    ns: Netns,
}

fn world(name: &str, fail_open: bool) -> World {
    world_with(name, fail_open, ANSWERS, "")
}

fn world_with(name: &str, fail_open: bool, server: Behaviour, extra_config: &str) -> World {
    let ns = Netns::new("itest").expect("netns");
    let work = WorkDir::new(name).expect("work dir");
    let server = FakeBroker::start(&ns, &[addr(V4), addr(V6)], server);
    let config = DaemonConfig::kafka(&[addr(V4), addr(V6)])
        .fail_open(fail_open)
        .extra(extra_config);
    let daemon = start_interceptor(&ns, &work, &config.body())
        .unwrap_or_else(|e| panic!("starting the daemon: {e:#}"));
    World {
        daemon,
        server,
        work,
        ns,
    }
}

/// What one request-response told us.
#[derive(Debug)]
struct Answer {
    /// The client's own address.
    local: SocketAddr,
    /// The peer address the server saw.
    seen_by_server: SocketAddr,
}

/// Connects from `src` to `dst` in the namespace, sends a Metadata v1 request, reads the answer.
fn ask(w: &World, src: &str, dst: &str) -> Result<Answer, String> {
    ask_within(w, src, dst, CONNECT_TIMEOUT)
}

fn ask_within(w: &World, src: &str, dst: &str, timeout: Duration) -> Result<Answer, String> {
    let (src, dst) = (addr(src), addr(dst));
    w.ns.run(|| {
        let (local, stream) = wire::connect_from(src, dst, timeout);
        let mut stream = stream.map_err(|e| format!("connect {local} -> {dst}: {e}"))?;
        let text = wire::opaque_round_trip(&mut stream, 7)
            .map_err(|e| format!("request {local} -> {dst}: {e}"))?;
        let text = String::from_utf8(text).map_err(|e| e.to_string())?;
        let seen_by_server = text
            .parse()
            .map_err(|e| format!("server answered {text:?}: {e}"))?;
        Ok(Answer {
            local,
            seen_by_server,
        })
    })
}

fn ask_ok(w: &World, src: &str, dst: &str) -> Answer {
    ask(w, src, dst).unwrap_or_else(|e| panic!("{e}\n{}", w.daemon.log_tail(60)))
}

/// Asserts the connection went through the interceptor: the server saw someone else (the
/// daemon's upstream socket), never the client, and the audit records the client and the
/// original destination.
fn assert_steered(w: &World, a: &Answer, dst: &str) {
    assert_ne!(
        a.seen_by_server,
        a.local,
        "the server saw the client itself: not steered\n{}",
        w.daemon.log_tail(40)
    );
    assert!(
        !w.server.seen().contains(&a.local),
        "the client {} reached the server directly",
        a.local
    );
    assert_eq!(
        a.seen_by_server.ip().is_ipv4(),
        a.local.ip().is_ipv4(),
        "upstream family"
    );
    let client = a.local.to_string();
    let open = w
        .daemon
        .wait_audit(AUDIT_WAIT, |e| {
            e["event"] == "connection_open" && e["client"] == client.as_str()
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(open["original_dst"], dst, "original destination: {open}");
    assert_eq!(open["protocol"], "kafka", "{open}");
}

fn kernel_event(w: &World, kind: &str, client: SocketAddr) -> Result<Value, String> {
    let client = client.to_string();
    w.daemon
        .wait_audit(AUDIT_WAIT, |e| {
            e["event"] == "kernel" && e["kind"] == kind && e["client"] == client.as_str()
        })
        .map_err(|e| format!("{e:#}"))
}

/// A connection attempt that must not reach anything: times out or is refused.
fn assert_no_connection(w: &World, src: &str, dst: &str) -> SocketAddr {
    let before = w.server.seen().len();
    let started = Instant::now();
    let result = ask_within(w, src, dst, DROP_TIMEOUT);
    let Err(e) = &result else {
        panic!(
            "a connection to {dst} succeeded while no daemon serves: {result:?}\n{}",
            w.daemon.log_tail(40)
        );
    };
    eprintln!(
        "connection to {dst} failed as it should after {:?}: {e}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        w.server.seen().len(),
        before,
        "the server accepted a connection while the daemon was down"
    );
    // The local address the failed attempt used is in the error text.
    e.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("local address in the error")
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn loopback_client_is_steered_with_its_original_destination() {
    if !require_kernel() {
        return;
    }
    let w = world("steer-basic", false);
    let a = ask_ok(&w, "127.0.0.1:0", V4);
    assert_steered(&w, &a, V4);
    // The exempt upstream reached the server: it answered, and saw a loopback socket.
    assert!(a.seen_by_server.ip().is_loopback(), "{a:?}");
    kernel_event(&w, "steered", a.local).unwrap_or_else(|e| panic!("kernel steer event: {e}"));
    // The close is audited with bytes both ways.
    let client = a.local.to_string();
    let close = w
        .daemon
        .wait_audit(AUDIT_WAIT, |e| {
            e["event"] == "connection_close" && e["client"] == client.as_str()
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        close["bytes_from_client"].as_u64().unwrap_or(0) > 0,
        "{close}"
    );
    assert!(
        close["bytes_to_client"].as_u64().unwrap_or(0) > 0,
        "{close}"
    );
}

#[test]
fn other_sources_ports_and_ipv6_are_steered_never_exempt() {
    if !require_kernel() {
        return;
    }
    let w = world("steer-sources", false);
    // Keep one steered connection open so the daemon holds an exempt upstream 4-tuple while the
    // other clients connect.
    let (held_local, held) =
        w.ns.run(|| wire::connect_from(addr("127.0.0.1:0"), addr(V4), CONNECT_TIMEOUT));
    let mut held = held.expect("held connection");
    let held_text =
        w.ns.run(|| wire::opaque_round_trip(&mut held, 1))
            .expect("held request");
    let exempt: SocketAddr = String::from_utf8(held_text).unwrap().parse().unwrap();
    assert_ne!(exempt, held_local);

    for (src, dst) in [
        ("127.0.0.2:0", V4),
        ("127.0.0.1:47123", V4),
        ("127.0.0.3:47124", V4),
        ("[::1]:0", V6),
        ("[::1]:47125", V6),
    ] {
        let a = ask_ok(&w, src, dst);
        eprintln!(
            "{src} -> {dst}: client {} server saw {}",
            a.local, a.seen_by_server
        );
        assert_steered(&w, &a, dst);
    }

    // Another socket trying the daemon's own exempt source address cannot pass around it: the
    // 4-tuple is taken (bind or connect fails), or the flow is steered like any other.
    match ask(&w, &exempt.to_string(), V4) {
        Err(e) => eprintln!("reusing the exempt source failed as expected: {e}"),
        Ok(a) => {
            eprintln!("reusing the exempt source connected: {a:?}");
            assert_steered(&w, &a, V4);
        }
    }
    drop(held);
}

#[test]
fn killed_daemon_fails_closed_and_restart_takes_over() {
    if !require_kernel() {
        return;
    }
    let mut w = world("steer-kill", false);
    let a = ask_ok(&w, "127.0.0.1:0", V4);
    assert_steered(&w, &a, V4);

    w.daemon.kill();
    let dropped_v4 = assert_no_connection(&w, "127.0.0.1:0", V4);
    let dropped_v6 = assert_no_connection(&w, "[::1]:0", V6);
    // The pins outlive the daemon.
    assert!(
        w.daemon.pin_dir().exists(),
        "pin dir removed by a killed daemon"
    );

    w.daemon
        .start()
        .unwrap_or_else(|e| panic!("restart on the same pins: {e:#}"));
    let b = ask_ok(&w, "127.0.0.1:0", V4);
    assert_steered(&w, &b, V4);
    let c = ask_ok(&w, "[::1]:0", V6);
    assert_steered(&w, &c, V6);

    // The drops while nobody listened reach userspace: the pinned ring buffer keeps them for
    // the next daemon, which audits them.
    for dropped in [dropped_v4, dropped_v6] {
        let ev = kernel_event(&w, "dropped_no_listener", dropped)
            .unwrap_or_else(|e| panic!("no kernel drop event for {dropped}: {e}"));
        eprintln!("kernel drop event: {ev}");
    }
}

#[test]
fn sigterm_keeps_steering_attached_and_detach_removes_it() {
    if !require_kernel() {
        return;
    }
    let mut w = world("steer-term", false);
    let a = ask_ok(&w, "127.0.0.1:0", V4);
    assert_steered(&w, &a, V4);

    w.daemon
        .stop()
        .unwrap_or_else(|e| panic!("clean stop on SIGTERM: {e:#}"));
    assert!(w.daemon.pin_dir().exists(), "SIGTERM removed the pins");
    assert_no_connection(&w, "127.0.0.1:0", V4);

    w.daemon
        .detach()
        .unwrap_or_else(|e| panic!("detach: {e:#}"));
    assert!(!w.daemon.pin_dir().exists(), "detach left the pin dir");
    // Without the programs, connections go to the server directly again.
    let d = ask_ok(&w, "127.0.0.1:0", V4);
    assert_eq!(d.seen_by_server, d.local, "not direct after detach");
    let e = ask_ok(&w, "[::1]:0", V6);
    assert_eq!(e.seen_by_server, e.local, "not direct after detach (IPv6)");
}

#[test]
fn fail_open_passes_directly_while_the_daemon_is_down() {
    if !require_kernel() {
        return;
    }
    let mut w = world("steer-failopen", true);
    assert!(
        w.daemon.log().contains("fail_open"),
        "no fail_open warning at start:\n{}",
        w.daemon.log_tail(20)
    );
    let a = ask_ok(&w, "127.0.0.1:0", V4);
    assert_steered(&w, &a, V4);

    w.daemon.kill();
    let direct = ask_ok(&w, "127.0.0.1:0", V4);
    assert_eq!(
        direct.seen_by_server, direct.local,
        "fail_open: the client should reach the server itself"
    );
    let direct6 = ask_ok(&w, "[::1]:0", V6);
    assert_eq!(direct6.seen_by_server, direct6.local, "fail_open over IPv6");

    w.daemon
        .start()
        .unwrap_or_else(|e| panic!("restart: {e:#}"));
    let b = ask_ok(&w, "127.0.0.1:0", V4);
    assert_steered(&w, &b, V4);
    for client in [direct.local, direct6.local] {
        let ev = kernel_event(&w, "passed_fail_open", client)
            .unwrap_or_else(|e| panic!("no kernel fail-open event for {client}: {e}"));
        eprintln!("kernel fail-open event: {ev}");
    }
    let _ = &w.work;
}

/// A client that leaves while its request is still with the broker (as a consumer does when it
/// is stopped during a 20 s group join) must not keep its session, upstream connection and
/// exempt entry alive until the broker happens to answer or close.
#[test]
fn client_gone_with_a_request_in_flight_ends_its_session() {
    if !require_kernel() {
        return;
    }
    let w = world_with("steer-gone", false, Behaviour::Silent, "");
    let (local, stream) =
        w.ns.run(|| wire::connect_from(addr("127.0.0.1:0"), addr(V4), CONNECT_TIMEOUT));
    let mut stream = stream.expect("connect");
    std::io::Write::write_all(&mut stream, &wire::opaque_request(5, "leaving")).expect("request");
    interceptor_e2e::wait_until(Duration::from_secs(5), "the upstream connection", || {
        (!w.server.seen().is_empty()).then_some(())
    })
    .expect("the daemon connected upstream");
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
    let client = local.to_string();
    let close = w
        .daemon
        .wait_audit(Duration::from_secs(10), |e| {
            e["event"] == "connection_close" && e["client"] == client.as_str()
        })
        .unwrap_or_else(|e| panic!("the session outlived its client: {e:#}"));
    eprintln!("closed: {close}");
}

/// A client that pipelines requests and never reads the answers must not make the daemon
/// buffer them: the daemon stops reading the broker once the client's socket is full, and stops
/// reading the client once `max_in_flight` requests await an answer.
#[test]
fn a_client_that_never_reads_is_not_buffered_in_memory() {
    if !require_kernel() {
        return;
    }
    // 2000 requests of 64 KiB: far more than the sockets' buffers can hold between them.
    const REQUESTS: i32 = 2000;
    const ANSWER_BYTES: usize = 1 << 20;
    let padded_request = |id| {
        let mut request = wire::opaque_request(id, "hoarder");
        request.resize(64 * 1024, 0); // trailing body bytes the fake broker ignores
        let len = (request.len() - 4) as i32;
        request[..4].copy_from_slice(&len.to_be_bytes());
        request
    };
    let w = world_with(
        "steer-backpressure",
        false,
        Behaviour::Answer {
            padding: ANSWER_BYTES,
        },
        "[limits]\nmax_in_flight = 16\n",
    );
    let pid = w.daemon.pid().expect("daemon pid");
    let rss_before = interceptor_e2e::rss_kib(pid);
    let (_local, stream) =
        w.ns.run(|| wire::connect_from(addr("127.0.0.1:0"), addr(V4), CONNECT_TIMEOUT));
    let mut stream = stream.expect("connect");
    // Writes block once the daemon stops reading: give up after a short stall.
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("write timeout");
    let mut sent = 0;
    for id in 0..REQUESTS {
        if std::io::Write::write_all(&mut stream, &padded_request(id)).is_err() {
            break;
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = interceptor_e2e::rss_kib(pid);
    eprintln!(
        "sent {sent} of {REQUESTS} requests (answers of 1 MiB each, never read); \
         daemon RSS {rss_before} KiB -> {rss_after} KiB"
    );
    // Unbounded buffering would hold about 2 GiB of answers; the bound is a few frames plus
    // the sockets' own buffers.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB\n{}",
        w.daemon.log_tail(20)
    );
    assert!(
        sent < REQUESTS,
        "the daemon kept reading a client whose answers pile up"
    );
    // The daemon still serves everyone else (while the hoarder is still connected).
    let other = w.ns.run(|| {
        let (_, other) = wire::connect_from(addr("127.0.0.2:0"), addr(V4), CONNECT_TIMEOUT);
        wire::opaque_round_trip(&mut other?, 1)
    });
    let answer = other.unwrap_or_else(|e| panic!("another client: {e}\n{}", w.daemon.log_tail(20)));
    assert!(answer.len() > ANSWER_BYTES, "a whole answer");
    drop(stream);
}

/// Connects from `src` to `dst` in `ns` and asks once; returns the client's address and the
/// peer address the fake broker saw.
fn ask_in(ns: &Netns, src: &str, dst: &str) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let (src, dst) = (addr(src), addr(dst));
    ns.run(|| {
        let (local, stream) = wire::connect_from(src, dst, CONNECT_TIMEOUT);
        let text = wire::opaque_round_trip(&mut stream?, 3)?;
        let seen = String::from_utf8_lossy(&text).parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{text:?}: {e}"))
        })?;
        Ok((local, seen))
    })
}

/// Development mode: no kernel programs at all. Only connections made to `--listen` pass
/// through the daemon, and it says so loudly; the broker's own address is not steered.
#[test]
fn listen_mode_forwards_without_kernel_programs_and_says_so() {
    if !require_kernel() {
        return;
    }
    let ns = Netns::new("itest").expect("netns");
    let work = WorkDir::new("listen-mode").expect("work dir");
    let _server = FakeBroker::start(&ns, &[addr(V4)], ANSWERS);
    let pins = PinDir::new("itest");
    let pin_dir = pins.path().to_path_buf();
    let config = DaemonConfig::kafka(&[addr(V4)]).body();
    let mut daemon = Interceptor::new(&ns, &work, &config, pins).expect("daemon");
    daemon.set_run_args(&["--mode", "listen", "--listen", "127.0.0.1:29092"]);
    daemon
        .start()
        .unwrap_or_else(|e| panic!("listen mode: {e:#}\n{}", daemon.log()));
    assert!(daemon.log().contains("LISTEN MODE"), "{}", daemon.log());
    assert!(!pin_dir.exists(), "listen mode pinned kernel objects");

    let (local, seen) = ask_in(&ns, "127.0.0.1:0", "127.0.0.1:29092").expect("through the daemon");
    assert_ne!(seen, local, "the broker saw the client itself");
    let (local, seen) = ask_in(&ns, "127.0.0.1:0", V4).expect("straight to the broker");
    assert_eq!(seen, local, "nothing is steered in listen mode");
}

/// The daemon's own steering listener is reachable like any local port; a connection made to
/// it directly has no protected destination and must get nothing.
#[test]
fn a_connection_to_the_daemons_own_listener_is_refused() {
    if !require_kernel() {
        return;
    }
    let w = world("steer-direct-listener", false);
    let pid = w.daemon.pid().expect("daemon pid");
    let ports = listening_ports(&w.ns, pid);
    let own = ports
        .iter()
        .copied()
        .find(|p| p.ip().is_loopback() && p.is_ipv4() && p.port() != 9092)
        .unwrap_or_else(|| panic!("the daemon's IPv4 listener among {ports:?}"));
    let result = ask_in(&w.ns, "127.0.0.1:0", &own.to_string());
    assert!(
        result.is_err(),
        "a request to {own} was answered: {result:?}"
    );
    w.daemon
        .wait_audit(AUDIT_WAIT, |e| {
            e["event"] == "connection_refused"
                && e["reason"] == "not_protected"
                && e["original_dst"] == own.to_string().as_str()
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        w.server.seen().is_empty(),
        "the broker got a connection: {:?}",
        w.server.seen()
    );
}

/// TCP addresses `pid` listens on, from `ss` in the namespace.
fn listening_ports(ns: &Netns, pid: u32) -> Vec<SocketAddr> {
    let out = ns.command("ss").args(["-Hltnp"]).output().expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.parse().ok())
        .collect()
}
