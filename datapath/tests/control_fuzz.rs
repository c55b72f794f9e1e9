//! The datapath's control-socket reader (`control::Conn`) on arbitrary bytes and
//! descriptors: it never panics, and every descriptor that arrived is closed by the time
//! the connection is gone — including a message carrying the most descriptors Linux
//! passes at once. The process's fd count is the measure, so the tests take turns.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use datapath::control::{send_with_fds, Conn, Incoming};
use proptest::prelude::*;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn pair() -> (UnixStream, Conn) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    (a, Conn::new(mio::net::UnixStream::from_std(b)))
}

/// Reads until the peer's close is seen; returns the requests and refusals read.
fn drain(conn: &mut Conn) -> Vec<Incoming> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        let (got, closed) = conn.read();
        all.extend(got);
        if closed {
            return all;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the close was never seen");
}

fn chunk() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let line = prop_oneof![
        Just(br#"{"op":"ping"}"#.to_vec()),
        Just(br#"{"op":"attach","uio":"u","params":{"path":null,"io_type":"nullio","io_mode":"wt","block_size":null,"blocks":null,"scsi_id":null,"scsi_sn":null},"target":"t","lun":0,"uio_fd":true,"backing_fd":true}"#.to_vec()),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
    .prop_map(|mut l| {
        l.push(b'\n');
        l
    });
    let bytes = prop_oneof![line, prop::collection::vec(any::<u8>(), 1..600)];
    (
        bytes,
        prop_oneof![4 => Just(0usize), 1 => 1usize..4, 1 => Just(200usize)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_and_fds_never_panic_or_leak(chunks in prop::collection::vec(chunk(), 1..8)) {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let before = open_fds();
        {
            let (a, mut conn) = pair();
            for (bytes, nfds) in &chunks {
                let fds: Vec<BorrowedFd<'_>> = (0..*nfds).map(|_| devnull.as_fd()).collect();
                // The reader may close first (a line over its limit): later sends fail.
                if send_with_fds(&a, bytes, &fds).is_err() {
                    break;
                }
                let _ = conn.read();
            }
            drop(a);
            let _ = drain(&mut conn);
            drop(conn);
        }
        prop_assert_eq!(open_fds(), before, "descriptors leaked");
    }
}

#[test]
fn surplus_descriptors_are_closed() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let before = open_fds();
    {
        let (a, mut conn) = pair();
        let fds: Vec<BorrowedFd<'_>> = (0..253).map(|_| devnull.as_fd()).collect();
        send_with_fds(&a, b"{\"op\":\"ping\"}\n", &fds).unwrap();
        let mut got = Vec::new();
        while got.is_empty() {
            got.extend(conn.read().0);
        }
        assert!(matches!(&got[0], Incoming::Request(_, f) if f.is_empty()));
        assert!(open_fds() >= before + 253, "the descriptors arrived");
        drop(a);
        drain(&mut conn);
    }
    assert_eq!(open_fds(), before);
}
