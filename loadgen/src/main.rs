//! `loadgen`: Kafka produce/fetch load with librdkafka, for `cargo xtask bench`.
//!
//! The main thread enqueues records; librdkafka's `ThreadedProducer` polling thread blocks on
//! the event queue and stamps each delivery report as it arrives (librdkafka's own poll timeouts
//! are whole milliseconds, so a single thread pacing sub-millisecond sends would have to spin or
//! read the reports late). Prints one JSON line of results on stdout; diagnostics on stderr.
//!
//! - `produce`: N records of S bytes to topic T, as fast as possible, or at `--rate` records/s.
//!   Every record's delivery latency (enqueue -> delivery report) goes into an HDR histogram.
//!   `--warmup` records are sent and flushed first (connections, metadata) and not counted.
//! - `consume`: N records from the beginning of every partition of T (assign, no group), timed
//!   from the assignment to the N-th record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Produce,
    Consume,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Payload {
    /// Pseudo-random bytes: compression does not shrink them.
    Random,
    /// Random lower-case words: compresses to roughly half.
    Text,
    /// JSON payment records padded to the size with a note of words: a card number at
    /// `$.card.number` and an email at `$.customer.email` (the masking bench's two fields),
    /// each one of 64 values.
    Json,
}

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "librdkafka produce/fetch load with per-message latency"
)]
struct Args {
    #[arg(value_enum)]
    mode: Mode,
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Records to produce or to consume (not counting warm-up records).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Offered rate in records/s (produce); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// `acks` (request.required.acks): 0, 1 or -1/all.
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    #[arg(long, value_enum, default_value_t = Payload::Random)]
    payload: Payload,
    /// Records produced and flushed before measuring (produce mode).
    #[arg(long, default_value_t = 1000)]
    warmup: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Write every counted record's enqueue time and latency (ns, tab-separated) to this file,
    /// for looking at where the tail comes from.
    #[arg(long)]
    latency_log: Option<std::path::PathBuf>,
    /// Extra librdkafka properties, `key=value`, repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.size == 0 {
        bail!("--size must be at least 1");
    }
    let result = match args.mode {
        Mode::Produce => produce(&args)?,
        Mode::Consume => consume(&args)?,
    };
    println!("{result}");
    Ok(())
}

fn base_config(args: &Args) -> Result<ClientConfig> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &args.bootstrap)
        .set("client.id", "loadgen")
        .set("log_level", "4");
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
        cfg.set(k, v);
    }
    Ok(cfg)
}

/// Delivery reports: latency histogram (ns) and counters. The opaque carries the enqueue time
/// as nanoseconds since `t0`, plus one; 0 marks a warm-up record that is not counted.
struct Stats {
    t0: Instant,
    hist: Mutex<Histogram<u64>>,
    /// (enqueue ns since t0, latency ns) of every counted record, when asked for.
    log: Option<Mutex<Vec<(u64, u64)>>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Stats {}

impl ProducerContext for Stats {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        match result {
            Ok(_) => {
                if opaque != 0 {
                    let now = self.t0.elapsed().as_nanos() as u64;
                    let enq = opaque as u64 - 1;
                    let lat = now.saturating_sub(enq).max(1);
                    self.hist.lock().unwrap().saturating_record(lat);
                    if let Some(log) = &self.log {
                        log.lock().unwrap().push((enq, lat));
                    }
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap();
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

fn payloads(args: &Args) -> Vec<Vec<u8>> {
    // xorshift64*, fixed seed: the same bytes every run.
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    const WORDS: &[&str] = &[
        "kafka",
        "record",
        "batch",
        "broker",
        "topic",
        "partition",
        "offset",
        "producer",
        "consumer",
        "latency",
        "steer",
        "socket",
        "frame",
        "header",
        "policy",
        "audit",
    ];
    (0..64)
        .map(|_| match args.payload {
            Payload::Random => (0..args.size).map(|_| next() as u8).collect(),
            Payload::Json => {
                const CARDS: &[&str] = &[
                    "4111111111111111",
                    "5555555555554444",
                    "378282246310005",
                    "6011111111111117",
                ];
                let id = next();
                let mut note = String::new();
                let head = format!(
                    "{{\"id\":\"{id:016x}\",\"ts\":{},\"amount\":{}.{:02},\
                     \"card\":{{\"number\":\"{}\",\"exp\":\"12/29\"}},\
                     \"customer\":{{\"name\":\"Customer {}\",\"email\":\"user{}@example.com\"}},\
                     \"note\":\"",
                    1_732_356_000_000u64 + next() % 86_400_000,
                    next() % 1000,
                    next() % 100,
                    CARDS[(next() % CARDS.len() as u64) as usize],
                    next() % 1000,
                    id % 10_000,
                );
                while head.len() + note.len() + 2 < args.size {
                    note.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                    note.push(' ');
                }
                note.truncate(args.size.saturating_sub(head.len() + 2));
                format!("{head}{note}\"}}").into_bytes()
            }
            Payload::Text => {
                let mut v = Vec::with_capacity(args.size + 16);
                while v.len() < args.size {
                    v.extend_from_slice(WORDS[(next() % WORDS.len() as u64) as usize].as_bytes());
                    v.push(b' ');
                    if next() % 4 == 0 {
                        v.extend_from_slice(format!("{} ", next() % 100_000).as_bytes());
                    }
                }
                v.truncate(args.size);
                v
            }
        })
        .collect()
}

fn produce(args: &Args) -> Result<serde_json::Value> {
    let mut cfg = base_config(args)?;
    cfg.set("acks", &args.acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("compression.codec", &args.compression)
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", (args.timeout_s * 1000).to_string());
    let stats = Stats {
        t0: Instant::now(),
        hist: Mutex::new(Histogram::new_with_bounds(1, 120_000_000_000, 3)?),
        log: args
            .latency_log
            .as_ref()
            .map(|_| Mutex::new(Vec::with_capacity(args.records as usize))),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let producer: ThreadedProducer<Stats> = cfg.create_with_context(stats)?;
    let payloads = payloads(args);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let topic = args.topic.as_str();

    // Sends one record, waiting (and serving delivery reports) while the local queue is full.
    let send = |i: u64, counted: bool| -> Result<()> {
        let payload = &payloads[(i % payloads.len() as u64) as usize];
        loop {
            let opaque = if counted {
                producer.context().t0.elapsed().as_nanos() as usize + 1
            } else {
                0
            };
            match producer
                .send::<[u8], [u8]>(BaseRecord::with_opaque_to(topic, opaque).payload(payload))
            {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_micros(500));
                    if Instant::now() > deadline {
                        bail!("timed out with the producer queue full");
                    }
                }
                Err((e, _)) => bail!("produce: {e}"),
            }
        }
    };

    for i in 0..args.warmup {
        send(i, false)?;
    }
    producer
        .flush(Duration::from_secs(args.timeout_s))
        .context("warm-up flush")?;
    check_failed(producer.context())?;

    let start = Instant::now();
    if args.rate == 0 {
        for i in 0..args.records {
            send(i, true)?;
        }
    } else {
        // Open loop: record i is due at start + i/rate, whatever happened to earlier records.
        let interval_ns = 1_000_000_000f64 / args.rate as f64;
        for i in 0..args.records {
            let due = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            send(i, true)?;
            if Instant::now() > deadline {
                bail!("timed out");
            }
        }
    }
    let flush_left = deadline.saturating_duration_since(Instant::now());
    producer.flush(flush_left).context("flush")?;
    let elapsed = start.elapsed().as_secs_f64();
    let ctx = producer.context();
    check_failed(ctx)?;
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    if delivered != args.records {
        bail!("delivered {delivered} of {} records", args.records);
    }
    if let (Some(path), Some(log)) = (&args.latency_log, &ctx.log) {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for (enq, lat) in log.lock().unwrap().iter() {
            writeln!(out, "{enq}\t{lat}")?;
        }
        out.flush()?;
    }
    let hist = ctx.hist.lock().unwrap();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let bytes = args.records * args.size as u64;
    Ok(json!({
        "mode": "produce",
        "topic": args.topic,
        "records": args.records,
        "size": args.size,
        "bytes": bytes,
        "rate": args.rate,
        "warmup": args.warmup,
        "acks": args.acks,
        "linger_ms": args.linger_ms,
        "compression": args.compression,
        "elapsed_s": elapsed,
        "records_per_s": args.records as f64 / elapsed,
        "mb_per_s": bytes as f64 / elapsed / 1e6,
        "latency_us": {
            "p50": us(0.50), "p90": us(0.90), "p99": us(0.99), "p999": us(0.999),
            "max": hist.max() as f64 / 1000.0, "mean": hist.mean() / 1000.0,
        },
        "cpu_s": own_cpu_seconds(),
        "librdkafka": rdkafka::util::get_rdkafka_version().1,
    }))
}

/// User + system CPU seconds of this process so far (all threads, librdkafka's included).
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn check_failed(ctx: &Stats) -> Result<()> {
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!(
            "{failed} records failed, first error: {}",
            ctx.first_error.lock().unwrap().as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

fn consume(args: &Args) -> Result<serde_json::Value> {
    let mut cfg = base_config(args)?;
    // librdkafka's fetch sizes as they are (fetch.max.bytes 50 MiB, 1 MiB per partition):
    // what an ordinary consumer asks for. `--set` changes them.
    cfg.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("group.id", "loadgen");
    let consumer: BaseConsumer = cfg.create()?;
    let timeout = Duration::from_secs(args.timeout_s);
    let md = consumer
        .fetch_metadata(Some(&args.topic), timeout)
        .context("metadata")?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == args.topic)
        .context("topic missing from metadata")?;
    if let Some(e) = topic.error() {
        bail!("topic {}: {e:?}", args.topic);
    }
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        tpl.add_partition_offset(&args.topic, p.id(), Offset::Beginning)?;
    }
    let partitions = topic.partitions().len();
    let deadline = Instant::now() + timeout;
    let start = Instant::now();
    consumer.assign(&tpl)?;
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    while n < args.records {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consume: {e}"),
            None => {}
        }
        if Instant::now() > deadline {
            bail!("timed out after {n} of {} records", args.records);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let from_first = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(elapsed);
    Ok(json!({
        "mode": "consume",
        "topic": args.topic,
        "partitions": partitions,
        "records": n,
        "bytes": bytes,
        "elapsed_s": elapsed,
        "elapsed_from_first_s": from_first,
        "records_per_s": n as f64 / elapsed,
        "mb_per_s": bytes as f64 / elapsed / 1e6,
        "cpu_s": own_cpu_seconds(),
        "librdkafka": rdkafka::util::get_rdkafka_version().1,
    }))
}
