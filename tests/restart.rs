//! Durability: every acknowledged span survives a clean restart and a crash.

mod common;

use common::{ducktrace, post_protobuf, span_count, synthetic_request, Server};

#[test]
fn spans_survive_a_clean_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(data_dir.path(), &[]);
    post_protobuf(&server, &synthetic_request(1, 10));
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM should end ducktrace cleanly, got {status}"
    );

    let server = Server::start_in(data_dir.path(), &[]);
    assert_eq!(span_count(&server), 10);
    post_protobuf(&server, &synthetic_request(2, 5));
    assert_eq!(span_count(&server), 15);
}

#[test]
fn acknowledged_spans_survive_a_crash() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(data_dir.path(), &[]);
    let concurrent: usize = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..8u8)
            .map(|seed| {
                let server = &server;
                scope.spawn(move || {
                    for round in 0..5u8 {
                        post_protobuf(server, &synthetic_request(seed * 10 + round + 1, 200));
                    }
                    5 * 200
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).sum()
    });
    // A request this large puts the writer under load, where the next request is answered once
    // it is in the ingest log and then waits 50 ms in an open transaction for more: the crash
    // comes within that wait.
    let (large, last) = (16_000, 10);
    post_protobuf(&server, &synthetic_request(200, large));
    post_protobuf(&server, &synthetic_request(201, last));
    let sent = concurrent + large + last;
    server.crash();

    // Read-only tools cannot commit what the crash left in the ingest log, and say so.
    let dir = data_dir.path().to_str().unwrap();
    let (ok, printed) = ducktrace(&[
        "sql",
        "--offline",
        "--data-dir",
        dir,
        "SELECT count(*) FROM spans",
    ]);
    assert!(ok, "{printed}");
    assert!(
        printed.contains("the ingest log holds acknowledged requests that the database does not have yet"),
        "{printed}"
    );

    let server = Server::start_in(data_dir.path(), &[]);
    assert_eq!(
        span_count(&server),
        sent as i64,
        "every acknowledged span is there after SIGKILL"
    );
}
