//! The benchmark's ceiling row: the same cases as bench/clients/*.js over the same broker and
//! transport (MQTT 3.1.1 on WebSockets), on rumqttc with no JS and no JSON work: how fast the
//! broker and the socket allow. One publisher and one subscriber connection in one process.
//!
//! Input: argv[1] = JSON `{ url, qos, size, n, mode: "burst" | "paced", rate, warmup }`.
//! Output: one JSON line, the same fields as the JS clients.
//!
//! Each payload is `size` bytes: seq (u64 LE), send time (u64 LE, ns since the process' base
//! instant), then padding. With `warmup` W > 0, a burst of W messages (seq n..n+W) goes first
//! and the measurement starts once all of them arrived, as in the JS clients.

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS, Transport};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

struct Args {
    url: String,
    qos: u8,
    size: usize,
    n: usize,
    mode: String,
    rate: f64,
    timeout_sec: u64,
    warmup: usize,
}

fn parse_args() -> Args {
    let raw = std::env::args().nth(1).expect("usage: bench-ceiling '{\"url\":...}'");
    let v: serde_json::Value = serde_json::from_str(&raw).expect("argv[1] is not JSON");
    Args {
        url: v["url"].as_str().expect("url").to_string(),
        qos: v["qos"].as_u64().unwrap_or(0) as u8,
        size: v["size"].as_u64().unwrap_or(64) as usize,
        n: v["n"].as_u64().unwrap_or(1000) as usize,
        mode: v["mode"].as_str().unwrap_or("burst").to_string(),
        rate: v["rate"].as_f64().unwrap_or(1000.0),
        timeout_sec: v["timeoutSec"].as_u64().unwrap_or(60),
        warmup: v["warmup"].as_u64().unwrap_or(0) as usize,
    }
}

fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            let kb: f64 = rest.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().unwrap_or(0.0);
            return kb / 1024.0;
        }
    }
    0.0
}

/// User + system CPU seconds of this process (/proc/self/stat, clock ticks of 1/100 s).
fn cpu_sec() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based: 11, 12).
    let utime: f64 = fields.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    (utime + stime) / 100.0
}

fn options(id: &str, url: &str, size: usize) -> MqttOptions {
    // For Transport::Ws the whole URL is the host argument; the port is ignored.
    let mut o = MqttOptions::new(id, url, 0);
    o.set_transport(Transport::Ws);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(size + 4096, size + 4096);
    // The addon's in-flight window (MAX_INFLIGHT in src/options.rs), so that the two differ only
    // by the JS work and the glue.
    o.set_inflight(1_024);
    o.set_clean_session(true);
    o
}

fn nodelay(eventloop: &mut EventLoop) {
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
}

async fn wait_for<F: Fn(&Packet) -> bool>(eventloop: &mut EventLoop, what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(p))) if f(&p) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: timed out"),
        }
    }
}

struct Received {
    received: usize,
    unique: usize,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    latencies_ns: Vec<u64>,
}

/// The paced runs' clock, as in bench/clients/common.js: a thread that sleeps until each message
/// is due and sends a tick for it, so that messages go one at a time, 1/rate apart. (tokio's
/// timers have a resolution of 1 ms: a loop on `sleep` sends about half of them in pairs.)
fn metronome(n: usize, rate: f64) -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        for k in 0..n {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let base = Instant::now();
    let qos = if args.qos == 0 { QoS::AtMostOnce } else if args.qos == 1 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
    let tag = format!("{}-{}", std::process::id(), base.elapsed().as_nanos());
    let topic = format!("bench/ceiling/{tag}");
    let n = args.n;
    let paced = args.mode == "paced";

    // Subscriber: connect, subscribe, wait for SUBACK.
    let (sub, mut sub_loop) = AsyncClient::new(options(&format!("ceil-sub-{tag}"), &args.url, args.size), 1024);
    nodelay(&mut sub_loop);
    sub.subscribe(topic.clone(), qos).await.expect("subscribe");
    wait_for(&mut sub_loop, "subscriber CONNACK/SUBACK", |p| matches!(p, Packet::SubAck(_))).await;

    // Publisher: connect, wait for CONNACK.
    let cap = n + 1024;
    let (publisher, mut pub_loop) = AsyncClient::new(options(&format!("ceil-pub-{tag}"), &args.url, args.size), cap);
    nodelay(&mut pub_loop);
    wait_for(&mut pub_loop, "publisher CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;

    let rss_connected = status_mb("VmRSS");

    // Subscriber task: counts deliveries until all N arrived or it is told to stop.
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let (all_tx, all_rx) = oneshot::channel::<()>();
    let (warm_tx, warm_rx) = oneshot::channel::<()>();
    let warmup = args.warmup;
    let receiver = tokio::spawn(async move {
        let mut warm_tx = Some(warm_tx);
        let mut warmed = 0usize;
        let mut seen = vec![false; n];
        let mut r = Received { received: 0, unique: 0, first_at: None, last_at: None, latencies_ns: Vec::with_capacity(if paced { n } else { 0 }) };
        let mut all_tx = Some(all_tx);
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                event = sub_loop.poll() => match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = Instant::now();
                        // seq and send time, the payload's first 16 bytes.
                        let stamp = (p.payload.len() >= 16).then(|| {
                            (u64::from_le_bytes(p.payload[0..8].try_into().unwrap()) as usize, u64::from_le_bytes(p.payload[8..16].try_into().unwrap()))
                        });
                        if stamp.is_some_and(|(seq, _)| seq >= n && seq < n + warmup) {
                            warmed += 1;
                            if warmed == warmup {
                                if let Some(tx) = warm_tx.take() { let _ = tx.send(()); }
                            }
                            continue;
                        }
                        r.received += 1;
                        r.first_at.get_or_insert(now);
                        r.last_at = Some(now);
                        if let Some((seq, sent)) = stamp {
                            if seq < n && !seen[seq] {
                                seen[seq] = true;
                                r.unique += 1;
                            }
                            if paced {
                                r.latencies_ns.push((now - base).as_nanos() as u64 - sent);
                            }
                        }
                        if r.unique == n {
                            if let Some(tx) = all_tx.take() { let _ = tx.send(()); }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("subscriber connection error: {e}");
                        break;
                    }
                }
            }
        }
        r
    });

    // Publisher event loop task.
    let (pub_stop_tx, mut pub_stop_rx) = oneshot::channel::<()>();
    let pub_task = tokio::spawn(async move {
        let mut errors = 0usize;
        loop {
            tokio::select! {
                _ = &mut pub_stop_rx => break,
                event = pub_loop.poll() => if let Err(e) = event {
                    errors += 1;
                    eprintln!("publisher connection error: {e}");
                    if errors > 3 { break }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    let payload = |seq: usize| -> Vec<u8> {
        let mut v = vec![b'x'; args.size.max(16)];
        v[0..8].copy_from_slice(&(seq as u64).to_le_bytes());
        v[8..16].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_le_bytes());
        v
    };

    if warmup > 0 {
        for seq in n..n + warmup {
            publisher.publish(topic.clone(), qos, false, payload(seq)).await.expect("publish");
        }
        tokio::time::timeout(Duration::from_secs(args.timeout_sec), warm_rx).await.expect("warm-up timed out").expect("receiver task");
    }
    let cpu0 = cpu_sec();
    let t0 = Instant::now();
    if paced {
        let mut ticks = metronome(n, args.rate);
        for seq in 0..n {
            ticks.recv().await.expect("the metronome stopped");
            publisher.publish(topic.clone(), qos, false, payload(seq)).await.expect("publish");
        }
    } else {
        for seq in 0..n {
            publisher.publish(topic.clone(), qos, false, payload(seq)).await.expect("publish");
        }
    }
    let accepted_at = Instant::now();

    let _ = tokio::time::timeout(Duration::from_secs(args.timeout_sec), all_rx).await;
    let _ = stop_tx.send(());
    let r = receiver.await.expect("receiver task");
    let end = Instant::now();
    let cpu = cpu_sec() - cpu0;
    let _ = pub_stop_tx.send(());
    let _ = pub_task.await;

    let accepted_sec = (accepted_at - t0).as_secs_f64();
    let delivered_sec = r.last_at.map(|l| (l - t0).as_secs_f64()).unwrap_or(0.0);
    let (p50, p99) = if paced && !r.latencies_ns.is_empty() {
        let mut l = r.latencies_ns.clone();
        l.sort_unstable();
        let pick = |q: f64| l[((l.len() as f64 * q).ceil() as usize).saturating_sub(1).min(l.len() - 1)] as f64 / 1e6;
        (serde_json::json!(pick(0.5)), serde_json::json!(pick(0.99)))
    } else {
        (serde_json::Value::Null, serde_json::Value::Null)
    };
    let out = serde_json::json!({
        "client": "rust ceiling",
        "qos": args.qos,
        "size": args.size,
        "n": n,
        "mode": args.mode,
        "acceptedPerSec": if accepted_sec > 0.0 { n as f64 / accepted_sec } else { 0.0 },
        "deliveredPerSec": if delivered_sec > 0.0 { r.unique as f64 / delivered_sec } else { 0.0 },
        "lost": n - r.unique,
        "duplicated": r.received - r.unique,
        "p50Ms": p50,
        "p99Ms": p99,
        "rssConnectedMB": rss_connected,
        "rssPeakMB": status_mb("VmHWM"),
        "cpuSec": cpu,
        "wallSec": (end - t0).as_secs_f64(),
        "errors": 0,
    });
    println!("{out}");
    std::process::exit(0);
}
