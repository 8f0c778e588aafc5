//! The gateway as a separate OS process (the release shape: several replicas on one bucket).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{SECRETS, TestApp};

pub struct GatewayProcess {
    pub address: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl GatewayProcess {
    /// Starts `target/…/finpass-gateway` against the app's Finpass simulator and S3 server
    /// and waits (bounded) until it answers `/healthz`.
    pub async fn start(app: &TestApp, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_finpass-gateway"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .envs(app.gateway_env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .stdout(Stdio::from(log.reopen().expect("log")))
            .stderr(Stdio::from(log.reopen().expect("log")));
        let child = cmd.spawn().expect("start the gateway binary");
        let process = Self {
            address: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = app
                .http
                .get(format!("{}/healthz", process.address))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return process;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway process did not start: {}",
                process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: the process dies mid-whatever, as a pod whose node is lost (no drain).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let logs = self.log_text();
            for secret in SECRETS {
                assert!(
                    !logs.contains(secret),
                    "process logs contain a secret ({secret})"
                );
            }
        }
    }
}
