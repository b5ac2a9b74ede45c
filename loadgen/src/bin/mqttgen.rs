//! MQTT publish load for `cargo xtask bench --mqtt`: one publisher and one subscriber on the
//! same topic, MQTT 3.1.1, plain TCP. Prints one JSON line: messages delivered, seconds from
//! the first publish to the last delivery, rates, and the publish-to-delivery latency of each
//! message (its send time travels in the payload).
//!
//! QoS 1 keeps `--window` publishes unacknowledged at most (a client's in-flight limit);
//! QoS 0 publishes as fast as the socket takes them. `--rate` paces publishing instead (the
//! latency run).

use std::{
    io::{BufReader, BufWriter, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    #[arg(long, default_value = "bench/mqtt")]
    topic: String,
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Payload bytes (at least 8: the send time).
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// QoS 1: most publishes awaiting PUBACK.
    #[arg(long, default_value_t = 100)]
    window: u64,
    /// Messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Messages not counted at the start (connections and caches warming up).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.size < 8 || args.qos > 1 {
        bail!("--size must be at least 8 and --qos 0 or 1");
    }
    let epoch = Instant::now();
    let mut sub = connect(&args, "bench-sub")?;
    // SUBSCRIBE id 1, the topic at the run's QoS.
    let mut body = vec![0, 1];
    put_str(&mut body, &args.topic);
    body.push(args.qos);
    write_packet(&mut sub, 0x82, &body)?;
    let (kind, _) = read_packet(&mut sub)?;
    if kind >> 4 != 9 {
        bail!("expected SUBACK, got packet type {}", kind >> 4);
    }
    let mut publ = connect(&args, "bench-pub")?;

    let delivered = Arc::new(AtomicU64::new(0));
    let subscriber = {
        let mut rd = BufReader::with_capacity(256 * 1024, sub.try_clone()?);
        let mut wr = sub;
        let (count, warmup) = (args.count, args.warmup);
        let delivered = Arc::clone(&delivered);
        let deadline = Duration::from_secs(args.timeout_s);
        thread::spawn(
            move || -> Result<(Histogram<u64>, Option<Instant>, Option<Instant>)> {
                let mut hist = Histogram::<u64>::new(3)?;
                let (mut first, mut last) = (None, None);
                wr.set_read_timeout(Some(Duration::from_secs(5)))?;
                let started = Instant::now();
                while delivered.load(Ordering::Relaxed) < count && started.elapsed() < deadline {
                    let (kind, body) = match read_packet(&mut rd) {
                        Ok(p) => p,
                        // No delivery for 5 s: QoS 0 messages were dropped somewhere; stop.
                        Err(_) => break,
                    };
                    if kind >> 4 != 3 {
                        continue;
                    }
                    let now = Instant::now();
                    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    let mut at = 2 + topic_len;
                    if (kind >> 1) & 3 > 0 {
                        let id = [body[at], body[at + 1]];
                        at += 2;
                        write_packet(&mut wr, 0x40, &id)?;
                    }
                    let sent = u64::from_be_bytes(body[at..at + 8].try_into()?);
                    let n = delivered.fetch_add(1, Ordering::Relaxed) + 1;
                    if n > warmup {
                        first.get_or_insert(now);
                        last = Some(now);
                        let micros = (now.duration_since(epoch).as_nanos() as u64)
                            .saturating_sub(sent)
                            / 1000;
                        hist.record(micros.max(1))?;
                    }
                }
                Ok((hist, first, last))
            },
        )
    };

    // Publisher: QoS 1 flow control through PUBACKs read on another thread.
    let acked = Arc::new((Mutex::new(0u64), Condvar::new()));
    let ack_reader = {
        let mut rd = BufReader::new(publ.try_clone()?);
        let acked = Arc::clone(&acked);
        let count = args.count;
        let qos = args.qos;
        thread::spawn(move || -> Result<()> {
            if qos == 0 {
                return Ok(());
            }
            loop {
                let (kind, _) = read_packet(&mut rd)?;
                if kind >> 4 == 4 {
                    let (lock, cv) = &*acked;
                    let mut n = lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    *n += 1;
                    cv.notify_all();
                    if *n >= count {
                        return Ok(());
                    }
                }
            }
        })
    };
    let mut wr = BufWriter::with_capacity(64 * 1024, publ.try_clone()?);
    let mut payload = vec![b'x'; args.size];
    let mut topic = Vec::new();
    put_str(&mut topic, &args.topic);
    let start = Instant::now();
    for i in 0..args.count {
        if args.rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                wr.flush()?;
                thread::sleep(due - now);
            }
        }
        if args.qos == 1 {
            let (lock, cv) = &*acked;
            let mut n = lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            while i >= *n + args.window {
                wr.flush()?;
                n = cv
                    .wait_timeout(n, Duration::from_secs(5))
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .0;
            }
        }
        let sent = epoch.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&sent.to_be_bytes());
        let mut body = Vec::with_capacity(topic.len() + 2 + payload.len());
        body.extend_from_slice(&topic);
        if args.qos == 1 {
            let id = (i % 65_535 + 1) as u16;
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(&payload);
        write_packet(&mut wr, 0x30 | (args.qos << 1), &body)?;
        if args.rate > 0 {
            wr.flush()?;
        }
    }
    wr.flush()?;
    let (hist, first, last) = subscriber
        .join()
        .map_err(|_| anyhow::anyhow!("subscriber panicked"))??;
    if args.qos == 1 {
        ack_reader
            .join()
            .map_err(|_| anyhow::anyhow!("ack reader panicked"))??;
    }
    let _ = publ.write_all(&[0xe0, 0]);
    let n = delivered.load(Ordering::Relaxed);
    let measured = n.saturating_sub(args.warmup);
    let seconds = match (first, last) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let rate = if seconds > 0.0 {
        measured as f64 / seconds
    } else {
        0.0
    };
    println!(
        "{}",
        json!({
            "sent": args.count,
            "delivered": n,
            "measured": measured,
            "seconds": seconds,
            "msgs_per_s": rate,
            "mb_per_s": rate * args.size as f64 / 1e6,
            "p50_us": hist.value_at_quantile(0.50),
            "p99_us": hist.value_at_quantile(0.99),
            "p999_us": hist.value_at_quantile(0.999),
            "max_us": hist.max(),
        })
    );
    Ok(())
}

/// Opens a connection and logs in (MQTT 3.1.1, clean session, keep alive 60 s).
fn connect(args: &Args, client_id: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&args.addr, Duration::from_secs(10))
        .with_context(|| format!("connecting to {}", args.addr))?;
    s.set_nodelay(true)?;
    let mut flags = 0x02;
    let mut payload = Vec::new();
    put_str(&mut payload, client_id);
    if let Some(u) = &args.username {
        flags |= 0x80;
        put_str(&mut payload, u);
    }
    if let Some(p) = &args.password {
        flags |= 0x40;
        put_str(&mut payload, p);
    }
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.extend_from_slice(&[4, flags, 0, 60]);
    body.extend_from_slice(&payload);
    write_packet(&mut s, 0x10, &body)?;
    let (kind, body) = read_packet(&mut s)?;
    if kind >> 4 != 2 || body.get(1) != Some(&0) {
        bail!("CONNECT refused: packet {kind:#x} {body:?}");
    }
    Ok(s)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_packet(w: &mut impl Write, first: u8, body: &[u8]) -> Result<()> {
    let mut head = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        head.push(byte);
        if len == 0 {
            break;
        }
    }
    w.write_all(&head)?;
    w.write_all(body)?;
    Ok(())
}

fn read_packet(r: &mut impl Read) -> Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    r.read_exact(&mut first)?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        len |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            bail!("bad remaining length");
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((first[0], body))
}
