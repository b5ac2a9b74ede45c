//! The syslog sink against a real rsyslogd (Debian's `rsyslog`, installed by `cargo xtask
//! deps`): started as a child process on free loopback ports with imudp and imtcp, writing
//! what it parsed (RFC 5424 fields and MSG) to a file. The process is killed by pid when the
//! test ends, passed or failed (the harness's `Proc` guard).

use std::{
    collections::BTreeSet,
    fs,
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bytes::Bytes;
use interceptor_e2e::{Proc, WorkDir};
use serde_json::Value;

use super::{
    tests::{context, line, runtime, wait_for},
    ExportConfig, Exporters, LineMeta,
};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

struct Rsyslog {
    proc: Option<Proc>,
    conf: PathBuf,
    out: PathBuf,
    dir: PathBuf,
    udp: u16,
    tcp: u16,
}

impl Rsyslog {
    fn start(work: &WorkDir) -> Rsyslog {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "{RSYSLOGD} is missing: install Debian's rsyslog (`cargo xtask deps`)"
        );
        let udp = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tcp = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = work.path().to_path_buf();
        let out = work.join("received.log");
        let conf = work.join("rsyslog.conf");
        // What rsyslog itself parsed out of each message, `|`-separated, MSG last.
        fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}" maxMessageSize="256k")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}" rcvBufSize="4m")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="fields" type="string" string="%pri%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\n")
*.* action(type="omfile" file="{out}" template="fields")
"#,
                dir = dir.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let mut r = Rsyslog {
            proc: None,
            conf,
            out,
            dir,
            udp,
            tcp,
        };
        r.restart();
        r
    }

    /// Starts rsyslogd (again, on the same ports) and waits until both inputs work.
    fn restart(&mut self) {
        let mut cmd = Command::new(RSYSLOGD);
        cmd.arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"));
        let log = self.dir.join("rsyslogd.log");
        self.proc = Some(Proc::spawn("rsyslogd", cmd, &log).unwrap());
        let probe = format!(
            "ready-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        wait_for(Duration::from_secs(10), "rsyslogd's inputs", || {
            let _ = udp.send_to(
                format!("<14>1 - - probe - - - {probe}-udp").as_bytes(),
                ("127.0.0.1", self.udp),
            );
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.tcp)) {
                use std::io::Write;
                let m = format!("<14>1 - - probe - - - {probe}-tcp");
                let _ = s.write_all(format!("{} {m}", m.len()).as_bytes());
            }
            let text = fs::read_to_string(&self.out).unwrap_or_default();
            text.contains(&format!("{probe}-udp")) && text.contains(&format!("{probe}-tcp"))
        });
    }

    /// SIGTERM, and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(10)).unwrap();
        }
    }

    /// The messages received from `app`: (fields, MSG).
    fn received(&self, app: &str) -> Vec<Received> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(8, '|').collect();
                (f.len() == 8 && f[3] == app).then(|| Received {
                    pri: f[0].parse().unwrap(),
                    timestamp: f[1].to_owned(),
                    hostname: f[2].to_owned(),
                    procid: f[4].to_owned(),
                    msgid: f[5].to_owned(),
                    structured_data: f[6].to_owned(),
                    msg: f[7].to_owned(),
                })
            })
            .collect()
    }
}

#[derive(Debug)]
struct Received {
    pri: u8,
    timestamp: String,
    hostname: String,
    procid: String,
    msgid: String,
    structured_data: String,
    msg: String,
}

fn config(toml: &str) -> ExportConfig {
    toml::from_str(toml).unwrap()
}

fn offer(exporters: &Exporters, seqs: impl IntoIterator<Item = u64>) -> Vec<(Bytes, LineMeta)> {
    seqs.into_iter()
        .map(|seq| {
            // Sizes from a few hundred bytes to ~6 KB.
            let (l, meta) = line(seq, (seq as usize * 397) % 6000);
            exporters.offer(&l, &meta);
            (l, meta)
        })
        .collect()
}

/// Every received message is the offered line, with its RFC 5424 fields as rsyslog read them.
fn check_received(got: &[Received], sent: &[(Bytes, LineMeta)]) {
    for r in got {
        let json: Value = serde_json::from_str(&r.msg)
            .unwrap_or_else(|e| panic!("MSG is not the JSON line ({e}): {r:?}"));
        let seq = json["seq"].as_u64().unwrap();
        let (line, meta) = sent
            .iter()
            .find(|(_, m)| m.seq == seq)
            .unwrap_or_else(|| panic!("seq {seq} was never offered"));
        assert_eq!(
            r.msg.as_bytes(),
            &line[..line.len() - 1],
            "the JSON is intact"
        );
        assert_eq!(r.pri, 8 * 13 + 6, "facility audit, severity info");
        assert_eq!(r.timestamp, super::syslog::timestamp(meta.time_ms));
        assert_eq!(r.hostname, "node-1.example");
        assert_eq!(r.procid, std::process::id().to_string());
        assert_eq!(r.msgid, "decision");
        assert_eq!(
            r.structured_data,
            format!("[interceptor@32473 seq=\"{seq}\"]")
        );
    }
}

fn seqs(got: &[Received]) -> Vec<u64> {
    got.iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.msg).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn rsyslog_receives_every_event_over_udp_and_tcp_as_rfc5424() {
    let work = WorkDir::new("export-rsyslog").unwrap();
    let rsyslog = Rsyslog::start(&work);
    let rt = runtime();
    let exporters = Exporters::start(
        &config(&format!(
            r#"
            [[syslog]]
            name = "udp"
            address = "udp://127.0.0.1:{}"
            app_name = "interceptor-udp"
            facility = "audit"
            [[syslog]]
            name = "tcp"
            address = "tcp://127.0.0.1:{}"
            app_name = "interceptor-tcp"
            facility = "audit"
            "#,
            rsyslog.udp, rsyslog.tcp
        )),
        context(&rt),
    )
    .unwrap();
    const N: u64 = 300;
    let mut sent = Vec::new();
    for chunk in (1..=N).collect::<Vec<_>>().chunks(50) {
        sent.extend(offer(&exporters, chunk.iter().copied()));
        // The writer hands lines over group by group. UDP has no flow control: a burst larger
        // than rsyslog's receive buffer (4 MiB here) would be lost unseen.
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(Duration::from_secs(10), "every event at rsyslog", || {
        rsyslog.received("interceptor-udp").len() as u64 >= N
            && rsyslog.received("interceptor-tcp").len() as u64 >= N
    });
    for app in ["interceptor-udp", "interceptor-tcp"] {
        let got = rsyslog.received(app);
        check_received(&got, &sent);
        assert_eq!(
            seqs(&got),
            (1..=N).collect::<Vec<_>>(),
            "{app}: every event, in order"
        );
    }
    let stats = exporters.shutdown(Duration::from_secs(2));
    for s in &stats {
        assert_eq!(s.sent, N, "{s:?}");
        assert_eq!(s.lost.total(), 0, "{s:?}");
        assert_eq!(s.queued, 0);
    }
}

#[test]
fn tcp_events_wait_while_rsyslog_is_down_and_the_excess_is_counted() {
    let work = WorkDir::new("export-rsyslog-outage").unwrap();
    let mut rsyslog = Rsyslog::start(&work);
    let rt = runtime();
    let exporters = Exporters::start(
        &config(&format!(
            r#"
            [[syslog]]
            address = "tcp://127.0.0.1:{}"
            app_name = "interceptor-tcp"
            facility = "audit"
            buffer = 50
            "#,
            rsyslog.tcp
        )),
        context(&rt),
    )
    .unwrap();
    let stats = || exporters.stats().remove(0);
    let mut sent = offer(&exporters, 1..=20);
    wait_for(Duration::from_secs(10), "the first events", || {
        rsyslog.received("interceptor-tcp").len() >= 20
    });

    rsyslog.stop();
    sent.extend(offer(&exporters, 21..=40));
    wait_for(Duration::from_secs(10), "the sink to notice", || {
        let s = stats();
        !s.connected && s.last_error.is_some()
    });
    let s = stats();
    assert_eq!((s.sent, s.queued, s.lost.total()), (20, 20, 0), "{s:?}");
    // 30 more fit the buffer of 50; the last 10 do not (drop_newest).
    sent.extend(offer(&exporters, 41..=80));
    let s = stats();
    assert_eq!((s.queued, s.lost.full), (50, 10), "{s:?}");

    rsyslog.restart();
    wait_for(Duration::from_secs(15), "the buffered events", || {
        stats().sent >= 70
    });
    let got = rsyslog.received("interceptor-tcp");
    check_received(&got, &sent);
    let got = seqs(&got);
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique, (1..=70).collect(), "all but the 10 counted lost");
    let mut firsts = Vec::new();
    for seq in &got {
        if !firsts.contains(seq) {
            firsts.push(*seq);
        }
    }
    assert_eq!(firsts, (1..=70).collect::<Vec<_>>(), "in seq order");
    let s = exporters.shutdown(Duration::from_secs(2)).remove(0);
    assert_eq!((s.sent, s.lost.full, s.lost.total()), (70, 10, 10), "{s:?}");
    assert!(s.retries >= 1, "{s:?}");
    assert!(s.connected);
}
