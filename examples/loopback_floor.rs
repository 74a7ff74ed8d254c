//! The floor under every server's fan-out on this machine: what one small TCP write to a
//! loopback socket costs the writer, with no WebSocket, no framing, no queue — `write(2)` of
//! `size` bytes to each of N connections, once per tick, while another process reads them all.
//!
//! ```text
//! taskset -c 1 cargo run --release --example loopback_floor -- receive 127.0.0.1:9009 &
//! taskset -c 0 cargo run --release --example loopback_floor -- send 127.0.0.1:9009 5000 100 60 5
//! ```
//! (`scripts/loopback-floor.sh` runs both.) On loopback the writer's system call also runs the
//! receiver's TCP input path and wakes its reader, so this is the cost a server measured with
//! `hibiki load` on the same machine pays per write, whoever wrote the server.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

/// CPU time of the calling thread so far (the scheduler's own count, ns).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    Duration::from_nanos(ns)
}

fn receive(addr: &str) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, Token(usize::MAX), Interest::READABLE)?;
    let mut conns: Vec<Option<MioStream>> = Vec::new();
    let (mut open, mut seen, mut bytes) = (0usize, 0usize, 0u64);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == Token(usize::MAX) {
                while let Ok((mut stream, _)) = listener.accept() {
                    poll.registry().register(&mut stream, Token(conns.len()), Interest::READABLE)?;
                    conns.push(Some(stream));
                    open += 1;
                    seen += 1;
                }
                continue;
            }
            let key = event.token().0;
            let Some(stream) = conns[key].as_mut() else { continue };
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        conns[key] = None;
                        open -= 1;
                        break;
                    }
                    Ok(n) => bytes += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        conns[key] = None;
                        open -= 1;
                        break;
                    }
                }
            }
        }
        if seen > 0 && open == 0 {
            println!("received {bytes} bytes on {seen} connections");
            return Ok(());
        }
    }
}

fn send(addr: &str, n: usize, size: usize, rate: u32, seconds: u32) -> io::Result<()> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let payload = vec![b'x'; size];
    let period = Duration::from_secs(1) / rate.max(1);
    let ticks = rate * seconds;
    let (mut worst, mut total) = (Duration::ZERO, Duration::ZERO);
    let mut late = 0;
    let cpu_start = thread_cpu();
    let start = Instant::now();
    for tick in 0..ticks {
        let due = start + period * tick;
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => late += 1,
        }
        let began = Instant::now();
        for stream in &mut streams {
            stream.write_all(&payload)?;
        }
        let took = began.elapsed();
        total += took;
        worst = worst.max(took);
    }
    let cpu = thread_cpu() - cpu_start;
    let writes = u64::from(ticks) * n as u64;
    println!(
        "{n} connections x {size} B at {rate} Hz for {seconds} s: {writes} writes, {:.2} µs of writer CPU per write \
         ({:.0} writes per CPU-second); a tick's writes took {:.2} ms on average, {:.2} ms at worst; {late} of {ticks} ticks late",
        cpu.as_secs_f64() * 1e6 / writes as f64,
        writes as f64 / cpu.as_secs_f64(),
        total.as_secs_f64() * 1e3 / f64::from(ticks),
        worst.as_secs_f64() * 1e3,
    );
    Ok(())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("receive") => receive(args.get(1).map_or("127.0.0.1:9009", String::as_str)),
        Some("send") => send(
            args.get(1).map_or("127.0.0.1:9009", String::as_str),
            arg(2, 5000) as usize,
            arg(3, 100) as usize,
            arg(4, 60) as u32,
            arg(5, 5) as u32,
        ),
        _ => {
            eprintln!("usage: loopback_floor receive ADDR | send ADDR [CONNECTIONS SIZE RATE SECONDS]");
            std::process::exit(2);
        }
    }
}
