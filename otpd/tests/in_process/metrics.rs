//! The `[metrics]` listener: `/metrics` counts what the daemon decided,
//! `/healthz` follows the store, and bad input gets a clean answer.

use std::sync::Arc;
use std::time::Duration;

use otpcore::config::MetricsConfig;
use otpd::daemon::{unix_now, Shutdown};
use otpd::metrics::MetricsListener;
use otpd::verifier::Verifier;
use otpstore::{Channel, VerifyOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::common::{self, active_token, daemon_with};

/// The whole answer to `request` sent to `addr`, as text.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("answered in time");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes()).await
}

/// The value of the sample `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_decisions_and_health_follows_the_store() {
    let (dir, daemon) = daemon_with(|c| {
        c.metrics = Some(MetricsConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
        });
    });
    let secret = active_token(&daemon, "alice");
    let listener =
        MetricsListener::bind(daemon.config.metrics.as_ref().expect("metrics")).expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, shutdown) = Shutdown::new();
    let served = tokio::spawn(listener.serve(Arc::clone(&daemon), shutdown));

    let verifier = Verifier::start(Arc::clone(&daemon)).expect("verifier");
    let params = daemon
        .store()
        .active("alice")
        .expect("q")
        .expect("active")
        .params;
    let code = params.code_at(&secret, unix_now() + params.period);
    let wrong = Zeroizing::new("000000".to_owned());
    let sent = [code.to_string(), wrong.to_string()];
    let mut outcomes = Vec::new();
    for code in [code, wrong] {
        outcomes.push(
            verifier
                .verify("alice".to_owned(), code, Channel::Pam, "uid=0".to_owned())
                .await,
        );
    }
    assert_eq!(outcomes[0], VerifyOutcome::Accept);

    let answer = get(addr, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("content-type: text/plain; version=0.0.4"),
        "{answer}"
    );
    let ok = r#"otpd_decisions_total{channel="pam",result="ok"}"#;
    let fail = r#"otpd_decisions_total{channel="pam",result="fail"}"#;
    assert_eq!(sample(&answer, ok), Some(1.0), "{answer}");
    assert_eq!(sample(&answer, fail), Some(1.0), "{answer}");
    assert_eq!(
        sample(&answer, "otpd_verify_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(sample(&answer, r#"otpd_tokens{state="active"}"#), Some(1.0));
    assert_eq!(sample(&answer, "otpd_store_errors_total"), Some(0.0));
    // Neither code is shown in a name, a label or a comment (a sample's
    // value is a number, whose digits may hold any six by chance).
    for line in answer.lines() {
        let text = match line.rsplit_once(' ') {
            Some((labels, value)) if !line.starts_with('#') && value.parse::<f64>().is_ok() => {
                labels
            }
            _ => line,
        };
        for code in &sent {
            assert!(!text.contains(code.as_str()), "{line}");
        }
    }

    let answer = get(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Garbage and a huge header get an error answer or a close, and the
    // listener serves on.
    let garbage = exchange(addr, b"\x00\x01\xff garbage\r\n\r\n").await;
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let answer = exchange(addr, huge.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let answer = get(addr, "/nothing").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    common::stopped(stop, served).await;
    drop(dir);
}
