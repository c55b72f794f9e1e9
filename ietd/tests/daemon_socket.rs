//! Hostile and careless clients on the control socket: garbage, oversized lines, half
//! lines, silence, floods. Each gets an error answer or is dropped, and the daemon keeps
//! serving everyone else.

use std::io::Write;
use std::time::{Duration, Instant};

use test_support::daemon::{Client, Daemon};

const CONF: &str = "Target iqn.x:one\n\tLun 0 Type=nullio\n";

fn still_serving(d: &Daemon) {
    let r = d.call(r#"{"op":"target_show","tid":1}"#);
    assert!(
        r.starts_with(r#"{"ok":true,"data":{"kind":"params""#),
        "{r}"
    );
}

fn errno_of(line: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(line.trim_end()).expect(line);
    assert_eq!(v["ok"], false, "{line}");
    v["errno"].as_i64().unwrap()
}

#[test]
fn garbage_lines_get_errors_and_the_connection_stays_usable() {
    let d = Daemon::start(CONF, &[]);
    let mut c = Client::connect(&d.socket).unwrap();
    // Random bytes (not UTF-8, NULs) on one line.
    let mut junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .filter(|&b| b != b'\n')
        .collect();
    junk.push(b'\n');
    c.send(&junk);
    assert_eq!(errno_of(&c.line()), libc::EINVAL as i64);
    for bad in [
        "{",
        "[]",
        "null",
        r#"{"op":"format_disk"}"#,
        r#"{"op":"target_delete"}"#,
        r#"{"op":"target_delete","tid":-1}"#,
        r#"{"op":"target_delete","tid":1,"force":true}"#,
        r#"{"op":"lun_new","tid":1,"lun":4294967296,"params":"Type=nullio"}"#,
    ] {
        let r = c.call(bad);
        assert_eq!(errno_of(&r), libc::EINVAL as i64, "{bad} -> {r}");
        assert!(r.contains("malformed request"), "{r}");
    }
    // Blank lines are ignored; CRLF is accepted.
    c.send(b"\n\r\n{\"op\":\"target_show\",\"tid\":1}\r\n");
    assert!(c.line().contains("Wthreads"));
    // Several requests in one write come back in order.
    c.send(b"{\"op\":\"target_show\",\"tid\":9}\n{\"op\":\"account_list\",\"tid\":1}\n");
    assert_eq!(errno_of(&c.line()), libc::ENOENT as i64);
    assert!(c.line().contains("\"kind\":\"accounts\""));
    still_serving(&d);
}

#[test]
fn oversized_line_is_refused_and_closed() {
    let d = Daemon::start(CONF, &[]);
    let mut c = Client::connect(&d.socket).unwrap();
    let big = vec![b'x'; 10 << 20];
    // The daemon stops reading after the limit; our write may then fail, which is fine.
    let _ = c.stream.write_all(&big);
    let r = c.line();
    assert_eq!(errno_of(&r), libc::EMSGSIZE as i64, "{r}");
    assert!(c.closed_within(Duration::from_secs(5)));
    still_serving(&d);
    // Just over the limit with a newline: the same.
    let mut c = Client::connect(&d.socket).unwrap();
    let mut line = vec![b' '; ietd::protocol::MAX_REQUEST_LINE + 1];
    line.push(b'\n');
    let _ = c.stream.write_all(&line);
    assert_eq!(errno_of(&c.line()), libc::EMSGSIZE as i64);
    still_serving(&d);
}

#[test]
fn half_line_then_disconnect() {
    let d = Daemon::start(CONF, &[]);
    for _ in 0..20 {
        let mut c = Client::connect(&d.socket).unwrap();
        c.send(br#"{"op":"target_delete","ti"#);
        drop(c);
    }
    // A client that half-closes gets told why nothing happened.
    let mut c = Client::connect(&d.socket).unwrap();
    c.send(br#"{"op":"target_delete","tid":1}"#);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.line();
    assert_eq!(errno_of(&r), libc::EINVAL as i64, "{r}");
    assert!(r.contains("not terminated"), "{r}");
    // Nothing was deleted.
    still_serving(&d);
}

#[test]
fn idle_and_stalled_clients_do_not_block_others() {
    let d = Daemon::start(CONF, &["--client-timeout", "1"]);
    let mut idle = Client::connect(&d.socket).unwrap();
    let mut stalled = Client::connect(&d.socket).unwrap();
    stalled.send(br#"{"op":"target_show","#);
    // Others are served at once while both hang around.
    let t = Instant::now();
    still_serving(&d);
    assert!(t.elapsed() < Duration::from_millis(500));
    // The stalled request is answered with a timeout and closed; the idle one closed.
    let r = stalled.line();
    assert_eq!(errno_of(&r), libc::ETIMEDOUT as i64, "{r}");
    assert!(stalled.closed_within(Duration::from_secs(5)));
    assert!(idle.closed_within(Duration::from_secs(5)));
    still_serving(&d);
}

#[test]
fn client_that_never_reads_does_not_stall_the_daemon() {
    let d = Daemon::start(CONF, &[]);
    let mut hog = Client::connect(&d.socket).unwrap();
    hog.stream.set_nonblocking(true).unwrap();
    let req = b"{\"op\":\"session_show\",\"tid\":1,\"sid\":0}\n".repeat(2000);
    // Keep writing until the kernel buffers are full in both directions.
    let mut sent = 0usize;
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        match hog.stream.write(&req) {
            Ok(n) => sent += n,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(sent > 0);
    let t = Instant::now();
    still_serving(&d);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn more_clients_than_the_limit() {
    let d = Daemon::start(CONF, &[]);
    let clients: Vec<Client> = (0..140)
        .map(|_| Client::connect(&d.socket).unwrap())
        .collect();
    // The daemon keeps at most 128; one of the later ones is told to come back.
    let mut refused = 0;
    for mut c in clients.into_iter().skip(124) {
        c.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let r = c.line();
        if !r.is_empty() {
            assert_eq!(errno_of(&r), libc::EAGAIN as i64, "{r}");
            refused += 1;
        }
    }
    assert!(refused >= 1, "clients over the limit were refused");
    still_serving(&d);
}
