//! The `finpass-gateway` binary: configuration from the environment, or `--sandbox` for a
//! self-contained local run.

use std::process::ExitCode;

use clap::Parser;
use finpass_gateway::{
    config::{self, Settings},
    retention,
    startup::Application,
    telemetry,
};

#[derive(Debug, Parser)]
#[command(version, about, after_long_help = config::env_help())]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run with an in-process Finpass simulator and S3 server: no credentials, no network.
    #[arg(long, global = true)]
    sandbox: bool,
    /// Where the sandbox S3 server keeps its objects.
    #[arg(long, default_value = ".sandbox-data", global = true)]
    sandbox_data: std::path::PathBuf,
    /// Print every environment variable the gateway reads, one per line: `NAME=DEFAULT`, or
    /// `NAME` when it is required.
    #[arg(long)]
    list_env: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Delete every statement whose `retain_until` has passed (every version), audited as
    /// `system:retention`, then exit: 0 when all went well, 1 when something could not be
    /// deleted, 2 when the configuration is refused. Same environment as the server; run it
    /// from a CronJob. With `--sandbox`, sweeps the sandbox's data directory.
    SweepRetention,
    /// Print a frontend user's JWT for CLIENT_ID, valid for an hour, signed with the sandbox's
    /// test key (the public half is tests/fixtures/jwt-es256-public.pem; issuer
    /// https://idp.example.com, audience finpass-gateway). Sandbox builds only.
    SandboxJwt { client_id: String },
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list_env {
        print!("{}", config::list_env());
        return ExitCode::SUCCESS;
    }
    match &cli.command {
        Some(Command::SweepRetention) => return sweep_retention(&cli).await,
        Some(Command::SandboxJwt { client_id }) => return sandbox_jwt(client_id),
        None => {}
    }
    let result = if cli.sandbox {
        run_sandbox(&cli).await
    } else {
        run().await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("finpass-gateway: {e}");
            ExitCode::from(2)
        }
    }
}

/// The sweep's settings, and what must live while it runs (the sandbox's servers).
type SweepSettings = (Settings, Option<Box<dyn std::any::Any>>);

/// `sweep-retention`: one run, its exit code for the CronJob.
async fn sweep_retention(cli: &Cli) -> ExitCode {
    let settings: Result<SweepSettings, Box<dyn std::error::Error>> = if cli.sandbox {
        sandbox_sweep_settings(cli)
    } else {
        Settings::from_env().map(|s| (s, None)).map_err(Into::into)
    };
    let (settings, _sandbox) = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("finpass-gateway sweep-retention: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = if cli.sandbox {
        telemetry::SANDBOX_FILTER
    } else {
        telemetry::DEFAULT_FILTER
    };
    telemetry::init_with(settings.log_format, filter);
    match retention::run(&settings).await {
        Ok(report) => {
            println!(
                "sweep-retention: {} statement(s) deleted, {} index entr(ies) dropped, {} due later today",
                report.deleted, report.dropped, report.kept
            );
            ExitCode::SUCCESS
        }
        Err(e @ retention::SweepError::Startup(_)) => {
            eprintln!("finpass-gateway sweep-retention: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("finpass-gateway sweep-retention: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The sweep's settings against the sandbox data directory: its own embedded S3 server over
/// the same files (kept alive by the returned guard while the sweep runs).
#[cfg(feature = "sandbox")]
fn sandbox_sweep_settings(cli: &Cli) -> Result<SweepSettings, Box<dyn std::error::Error>> {
    let (settings, s3, finpass, receiver) = sandbox_parts(cli, "127.0.0.1:0".parse()?)?;
    Ok((settings, Some(Box::new((s3, finpass, receiver)))))
}

/// The embedded S3 server over `--sandbox-data`, the Finpass simulator, and the settings that
/// point at both (the environment's documented variables still win, but for the S3
/// connection): what the sandbox run and the sandbox sweep share.
#[cfg(feature = "sandbox")]
fn sandbox_parts(
    cli: &Cli,
    listen: std::net::SocketAddr,
) -> Result<
    (
        Settings,
        finpass_gateway::sandbox::S3Sandbox,
        finpass_gateway::sandbox::FinpassSandbox,
        finpass_gateway::sandbox::WebhookReceiver,
    ),
    Box<dyn std::error::Error>,
> {
    use finpass_gateway::sandbox;

    let s3 = sandbox::S3Sandbox::start(&cli.sandbox_data)?;
    sandbox::create_bucket(&cli.sandbox_data)?;
    let finpass = sandbox::FinpassSandbox::start()?;
    // Ten after the API's (8090 beside the default 8080), as the README's walk-through says;
    // an ephemeral one when the API's is, or when the public listener was given that port (the
    // README's public-listener walk-through uses 8081).
    let public_port = std::env::var("PUBLIC_LISTEN_ADDR")
        .ok()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port());
    let receiver_port = match listen.port() {
        0 => 0,
        p => p
            .checked_add(10)
            .filter(|next| Some(*next) != public_port)
            .unwrap_or(0),
    };
    let receiver = sandbox::WebhookReceiver::start_on(receiver_port)?;
    let mut vars = sandbox_env();
    vars.extend(s3.env());
    // The demo receiver is the sandbox caller's (`anonymous`) webhook destination, unless the
    // environment names an endpoints file of its own.
    if !vars.iter().any(|(k, _)| *k == "WEBHOOK_ENDPOINTS_FILE") {
        let file = std::env::temp_dir().join(format!(
            "finpass-gateway-sandbox-{}-webhook-endpoints",
            std::process::id()
        ));
        std::fs::write(&file, receiver.endpoints_line("anonymous"))?;
        vars.push((
            "WEBHOOK_ENDPOINTS_FILE",
            file.to_string_lossy().into_owned(),
        ));
        vars.push(("WEBHOOK_ALLOW_HTTP", "true".to_owned()));
    }
    let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let settings = sandbox::settings(&finpass, listen, &extra)?;
    Ok((settings, s3, finpass, receiver))
}

#[cfg(not(feature = "sandbox"))]
fn sandbox_sweep_settings(_cli: &Cli) -> Result<SweepSettings, Box<dyn std::error::Error>> {
    Err("this build has no sandbox (built without the `sandbox` feature)".into())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    let app = Application::build(settings).await?;
    tracing::info!(
        port = app.port(),
        public_port = ?app.public_port(),
        "finpass-gateway listening"
    );
    app.run_until_stopped().await?;
    Ok(())
}

#[cfg(feature = "sandbox")]
async fn run_sandbox(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let (settings, s3, finpass, receiver) = sandbox_parts(cli, listen.parse()?)?;
    telemetry::init_with(settings.log_format, telemetry::SANDBOX_FILTER);
    let auth_disabled = settings.auth.disabled;
    let app = Application::build(settings).await?;
    let port = app.port();
    if let Some(public) = app.public_port() {
        println!("\nThe public listener (user JWTs only) is at http://127.0.0.1:{public}.");
    }
    println!(
        "\nfinpass-gateway sandbox is running (Finpass simulator at {}, S3 at {} storing under {}).\n\
         {auth} Try:\n\n  \
         curl -s -X POST http://127.0.0.1:{port}/v1/statements -H 'content-type: application/json' -d '{{\"client_id\":\"aa_demo_ready\"}}'\n\n\
         Demo clients (the README says what each shows): aa_demo_ready, aa_demo_mixed, aa_demo_pending (use \"wait_seconds\": 5), aa_demo_not_pdf, aa_demo_flaky, aa_demo_large, aa_demo_two_statements, aa_demo_refreshing, aa_demo_invalid_report, aa_demo_empty_data, aa_demo_null_data, aa_demo_wrong_client.\n\n\
         Demo webhook receiver (verifies signatures, logs each event): \"webhook_url\": \"{webhooks}\"\n",
        finpass.base_url(),
        s3.endpoint(),
        cli.sandbox_data.display(),
        webhooks = receiver.url(),
        auth = if auth_disabled {
            "Authentication is DISABLED (AUTH_DISABLED=true)."
        } else {
            "Authentication is ON: send Authorization: Bearer <token>."
        },
    );
    app.run_until_stopped().await?;
    Ok(())
}

/// Embedded defaults; any documented variable set in the environment still wins (e.g.
/// CALLER_TOKENS with AUTH_DISABLED=false to try authentication locally), except the S3
/// connection, which is the embedded server's.
#[cfg(feature = "sandbox")]
fn sandbox_env() -> Vec<(&'static str, String)> {
    config::ENV_VARS
        .iter()
        .filter(|v| v.name != "LISTEN_ADDR" && !config::vars::S3_CONNECTION.contains(v))
        .filter_map(|v| std::env::var(v.name).ok().map(|value| (v.name, value)))
        .collect()
}

#[cfg(feature = "sandbox")]
fn sandbox_jwt(client_id: &str) -> ExitCode {
    match finpass_gateway::sandbox::jwt::user_jwt(client_id) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("finpass-gateway sandbox-jwt: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "sandbox"))]
fn sandbox_jwt(_client_id: &str) -> ExitCode {
    eprintln!(
        "finpass-gateway sandbox-jwt: this build has no sandbox (built without the `sandbox` feature)"
    );
    ExitCode::from(2)
}

#[cfg(not(feature = "sandbox"))]
async fn run_sandbox(_cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    Err("this build has no sandbox (built without the `sandbox` feature)".into())
}
