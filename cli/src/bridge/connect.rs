//! From command-line options to a connected NATS client: the server's
//! address, credentials (token, user and password, a `.creds` file) and
//! TLS, as `async-nats` takes them.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use clap::Args;

use super::BridgeError;
use super::log::Log;

/// How to reach and authenticate to the NATS server.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server (several: comma-separated).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub server: String,
    /// A token the server requires.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A user name the server requires (with --password).
    #[arg(long, env = "NATS_USER", requires = "password")]
    pub user: Option<String>,
    /// The user's password.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, requires = "user")]
    pub password: Option<String>,
    /// A credentials file (JWT and NKey seed, as `nsc` writes them).
    #[arg(long)]
    pub creds: Option<PathBuf>,
    /// Trust this CA certificate (PEM), and require TLS.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), with --tls-key: mutual TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long the first connection may take before the bridge gives up.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    pub connect_timeout: Duration,
}

impl ConnectArgs {
    /// Connects, or says why not. Later disconnections are retried for
    /// ever (and logged); only the first connection can fail.
    pub async fn connect(&self, log: &Log, name: &str) -> Result<Client, BridgeError> {
        let servers = self
            .server
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<ServerAddr>()
                    .map_err(|e| format!("--server {s}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut opts = ConnectOptions::new()
            .name(name)
            .connection_timeout(self.connect_timeout)
            // a half-open link is noticed in ~20 s, not the default 2 min
            .ping_interval(Duration::from_secs(10))
            .max_reconnects(None);
        if let Some(t) = &self.token {
            opts = opts.token(t.clone());
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(path) = &self.creds {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?;
        }
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        let events = log.clone();
        opts = opts.event_callback(move |e| {
            let log = events.clone();
            async move {
                match e {
                    Event::Connected => log.info("connected to the server", &[]),
                    Event::Disconnected => log.warn(
                        "disconnected from the server: reconnecting; messages stay where they are",
                        &[],
                    ),
                    Event::ServerError(err) => log.warn(&format!("server error: {err}"), &[]),
                    Event::ClientError(err) => log.warn(&format!("client error: {err}"), &[]),
                    Event::SlowConsumer(_) => log.warn("slow consumer", &[]),
                    other => log.info(&format!("connection: {other}"), &[]),
                }
            }
        });
        // The connect future itself retries an unreachable server within
        // the timeout; bound the whole attempt too.
        let attempt = opts.connect(servers);
        match tokio::time::timeout(self.connect_timeout + Duration::from_secs(1), attempt).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", self.server).into()),
            Err(_) => Err(format!(
                "cannot connect to {}: no answer within {:?}",
                self.server, self.connect_timeout
            )
            .into()),
        }
    }
}
