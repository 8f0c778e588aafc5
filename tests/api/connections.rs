//! Connections that survive idle gaps (issue #21). A proxy in front of the gateway (ingress,
//! load balancer) and the tests' own client keep connections open between requests; if the
//! gateway closes an idle one first, the next request written on it fails. actix closes idle
//! connections after 5 s unless configured; the gateway keeps them `HTTP_KEEP_ALIVE_SECONDS`
//! (75 s).
//!
//! The idle gap is the thing under test, so these tests wait it out: just above actix's
//! old default.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    auth::JWT_FROM_FILE,
    helpers::{http_client, spawn_app, spawn_app_with},
};

/// Longer than actix's default keep-alive (5 s), the value the gateway had before
/// `HTTP_KEEP_ALIVE_SECONDS`.
const IDLE_GAP: Duration = Duration::from_secs(6);
/// Bound on any one answer on a loaded machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n";

/// Reads one HTTP/1.1 answer of known length from `conn`; its status and body.
async fn read_answer(conn: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the gateway closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {head}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no content-length: {head}"))?;
    let mut body = buf.split_off(head_end);
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the gateway closed the connection mid-body".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((status, body))
}

async fn ask_healthz(conn: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    conn.write_all(HEALTHZ)
        .await
        .map_err(|e| format!("write: {e}"))?;
    tokio::time::timeout(ANSWER_WITHIN, read_answer(conn))
        .await
        .map_err(|_| "no answer".to_owned())?
}

/// What a proxy in front of the gateway does: one connection, a request, a quiet spell, the
/// next request on the same connection.
#[actix_web::test]
async fn a_kept_alive_connection_still_answers_after_an_idle_gap_longer_than_actix_default() {
    let app = spawn_app().await;
    let mut conn = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let (status, _) = ask_healthz(&mut conn).await.expect("first answer");
    assert_eq!(status, 200);

    tokio::time::sleep(IDLE_GAP).await;

    let (status, _) = ask_healthz(&mut conn)
        .await
        .expect("an answer on the same connection after the idle gap");
    assert_eq!(status, 200);
}

/// The public listener (`PUBLIC_LISTEN_ADDR`, where the ingress connects) is built like the
/// internal one and keeps idle connections as long. (`/healthz` is not served there: its 404
/// is an answer all the same.)
#[actix_web::test]
async fn the_public_listener_keeps_connections_alive_as_long() {
    let mut env: Vec<(&str, &str)> = JWT_FROM_FILE.to_vec();
    env.push(("PUBLIC_LISTEN_ADDR", "127.0.0.1:0"));
    let app = spawn_app_with(env.as_slice()).await;
    let public = app.public_address.as_deref().expect("public listener");
    let port: u16 = public
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut conn = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (status, _) = ask_healthz(&mut conn).await.expect("first answer");
    assert_eq!(status, 404);

    tokio::time::sleep(IDLE_GAP).await;

    let (status, _) = ask_healthz(&mut conn)
        .await
        .expect("an answer on the same connection after the idle gap");
    assert_eq!(status, 404);
}

/// A loopback TCP relay to `target` that counts the connections it accepted.
async fn counting_relay(target: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    actix_web::rt::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            actix_web::rt::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                    // Either side closing closes the other: the relay is transparent.
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, accepted)
}

/// The tests' own client (`helpers::http_client`, also the memory test's) keeps its pooled
/// connection across an idle gap longer than actix's default, and the gateway still answers on
/// it: one connection for both requests. With the gateway closing idle connections after 5 s
/// the pool found its connection closed (or, on a slow machine, wrote on it just as it closed:
/// `Connect(Disconnected)` in `tests/memory.rs`).
#[actix_web::test]
async fn the_test_client_reuses_its_connection_after_an_idle_gap_longer_than_actix_default() {
    let app = spawn_app().await;
    let (port, accepted) = counting_relay(app.port).await;
    let http = http_client();
    let url = format!("http://127.0.0.1:{port}/healthz");

    let mut first = http.get(&url).send().await.expect("first request");
    assert_eq!(first.status().as_u16(), 200);
    // Read to the end: only a finished answer gives its connection back to the pool.
    first.body().await.expect("first body");
    tokio::time::sleep(IDLE_GAP).await;
    let mut second = http
        .get(&url)
        .send()
        .await
        .expect("a request after the idle gap");
    assert_eq!(second.status().as_u16(), 200);
    second.body().await.expect("second body");

    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "both requests went over the same (pooled) connection"
    );
}
