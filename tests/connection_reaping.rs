//! The real binary closes connections that stay quiet, cuts a request body
//! that trickles in, and waits out `accept` errors instead of spinning:
//! silent TCP connections to the facade, gRPC TCP and the gRPC Unix socket
//! are closed within `server.idle_timeout_ms` / `grpc_idle_timeout_ms`; a
//! body sent a byte at a time gets 408; out of file descriptors (a low
//! RLIMIT_NOFILE set on the child), the process stays nearly idle, logs one
//! line naming the error, and serves again once connections close.

mod common;

use common::process::{Sidecar, free_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const QUIET_MS: u64 = 300;

struct Ports {
    http: u16,
    tcp: u16,
}

fn start(dir: &Path) -> (Sidecar, Ports) {
    let socket = dir.join("sidecar.sock");
    let config = dir.join("sidecar.toml");
    let ports = Ports {
        http: free_port(),
        tcp: free_port(),
    };
    std::fs::write(
        &config,
        format!(
            r#"default_provider = "fake"
[server]
uds = "{socket}"
tcp = "127.0.0.1:{tcp}"
http = "127.0.0.1:{http}"
admin = ""
idle_timeout_ms = {QUIET_MS}
grpc_idle_timeout_ms = {QUIET_MS}
body_read_timeout_ms = {QUIET_MS}
[providers.fake]
base_url = "http://127.0.0.1:9/v1"
[ledger]
enabled = false
"#,
            socket = socket.display(),
            tcp = ports.tcp,
            http = ports.http,
        ),
    )
    .unwrap();
    let sidecar = Sidecar::serve(
        &["--config", config.to_str().unwrap()],
        Some("warn"),
        &socket,
        &dir.join("sidecar.log"),
    );
    sidecar.wait_for_port(ports.http);
    sidecar.wait_for_port(ports.tcp);
    (sidecar, ports)
}

/// Reads until the sidecar closes the connection (end or reset); how long
/// that took. Panics after 10 s.
fn until_closed(stream: &mut impl Read) -> Duration {
    let began = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return began.elapsed(),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return began.elapsed();
            }
            Err(error) => panic!("not closed within 10 s: {error}"),
        }
    }
}

fn assert_closed_in_time(what: &str, took: Duration) {
    let quiet = Duration::from_millis(QUIET_MS);
    assert!(took >= quiet / 2, "{what}: closed after {took:?}, too soon");
    assert!(took < quiet * 10, "{what}: closed after {took:?}");
}

#[test]
fn silent_connections_are_closed_on_every_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (_sidecar, ports) = start(dir.path());
    let mut facade = TcpStream::connect(("127.0.0.1", ports.http)).unwrap();
    let mut grpc = TcpStream::connect(("127.0.0.1", ports.tcp)).unwrap();
    let mut uds = UnixStream::connect(dir.path().join("sidecar.sock")).unwrap();
    facade
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    grpc.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    uds.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Read in turn: each was opened at the same moment, so each later wait
    // is shorter; the bound is on the first.
    assert_closed_in_time("HTTP facade", until_closed(&mut facade));
    assert!(until_closed(&mut grpc) < Duration::from_millis(QUIET_MS * 10));
    assert!(until_closed(&mut uds) < Duration::from_millis(QUIET_MS * 10));
}

#[test]
fn a_grpc_connection_after_its_preface_but_with_no_call_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (_sidecar, ports) = start(dir.path());
    let mut grpc = TcpStream::connect(("127.0.0.1", ports.tcp)).unwrap();
    grpc.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The client preface and an empty SETTINGS frame: a live HTTP/2
    // connection with no stream on it.
    grpc.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    assert_closed_in_time("gRPC TCP", until_closed(&mut grpc));
}

#[test]
fn a_body_sent_a_byte_at_a_time_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, ports) = start(dir.path());
    let mut stream = TcpStream::connect(("127.0.0.1", ports.http)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let token = caller_token(dir.path());
    stream
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n\
                 authorization: Bearer {token}\r\n\
                 content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        // A byte every 50 ms until the sidecar stops listening.
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(50));
            if writer.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let began = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
    assert!(began.elapsed() < Duration::from_secs(5));
    drop(stream);
    trickle.join().unwrap();
    let log = sidecar.log();
    assert!(log.contains("request body not received"), "{log}");
}

/// User plus system CPU time of `pid`, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn wait_for(what: &str, deadline: Duration, done: impl Fn() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The caller token the sidecar wrote beside its socket in `dir` (the
/// test config names none).
fn caller_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("token"))
        .expect("the sidecar wrote its caller token beside the socket")
        .trim()
        .to_owned()
}

fn models_answered(port: u16, token: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = format!(
        "GET /v1/models HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\
         connection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

#[test]
fn out_of_file_descriptors_the_accept_loops_wait_and_then_serve_again() {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let dir = tempfile::tempdir().unwrap();
    let (sidecar, ports) = start(dir.path());
    let pid = sidecar.child.id();
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    // The child inherited our hard limit; only its soft limit goes down.
    let hard = rustix::process::getrlimit(Resource::Nofile).maximum;
    prlimit(
        Some(Pid::from_child(&sidecar.child)),
        Resource::Nofile,
        Rlimit {
            current: Some(open_now + 4),
            maximum: hard,
        },
    )
    .unwrap();
    let errors = |listener: &str| {
        sidecar
            .log()
            .lines()
            .filter(|line| line.contains("cannot accept connections") && line.contains(listener))
            .count()
    };
    let mut clients: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", ports.http)).unwrap())
        .collect();
    wait_for("the facade's accept error", Duration::from_secs(10), || {
        errors("HTTP facade") > 0
    });
    // Only once the descriptors are gone: a gRPC connection accepted
    // before the facade's took the last one would meet no error.
    clients.extend((0..4).map(|_| TcpStream::connect(("127.0.0.1", ports.tcp)).unwrap()));
    wait_for("the gRPC accept error", Duration::from_secs(10), || {
        errors("gRPC TCP") > 0
    });
    let before = cpu_ticks(pid);
    let measured = Instant::now();
    // Measuring, not waiting for a state: CPU time needs a stretch of time.
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    let wall = measured.elapsed();
    let log = sidecar.log();
    assert!(
        used <= 30,
        "{used} ticks of CPU in {wall:?}: the accept loop spins\n{log}"
    );
    assert_eq!(errors("HTTP facade"), 1, "{log}");
    assert_eq!(errors("gRPC TCP"), 1, "{log}");
    assert!(log.contains("Too many open files"), "{log}");
    clients.clear();
    let token = caller_token(dir.path());
    wait_for(
        "the facade to answer again",
        Duration::from_secs(10),
        || models_answered(ports.http, &token),
    );
}
