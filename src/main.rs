//! `sighthub`: the binary. Thin glue over `sighthub-api` and `sighthub-store`: parse the
//! command line, read the configuration, start the server, stop it cleanly on SIGTERM/Ctrl-C.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sighthub_api::bootstrap;
use sighthub_api::server::Server;
use sighthub_api::Config;
use sighthub_store::SightingStore;
use std::net::SocketAddr;
use std::path::PathBuf;

/// jemalloc instead of glibc's allocator: measured side by side (docs/PERFORMANCE.md), it holds
/// less memory per stored value (fjall frees whole memtables at once, which glibc's per-thread
/// arenas keep), and it is cheaper per request and per bulk item.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A durable SightingDB-compatible sighting server and IEP04 exchange hub.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTPS on 127.0.0.1:9999 with an embedded store by default).
    Serve(ServeArgs),
    /// Re-build the sightings recorded from exchanged events by replaying the exchange log
    /// (for example after changing the `[bridge]` mapping). Run it with the server stopped.
    RebuildSightings(RebuildArgs),
}

#[derive(clap::Args)]
struct RebuildArgs {
    /// TOML configuration file (the one the server uses).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory. Overrides the config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log records applied per batch.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see docs/sighthub.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (database, TLS pair, admin key). Overrides the config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on. Overrides the config.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Turn API-key authentication off.
    #[arg(long)]
    no_auth: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    private_files();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::RebuildSightings(args) => rebuild(args),
    }
}

fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(args.config.as_deref(), args.data_dir)?;
    // No listener, no TLS and no key generation are needed to replay the log.
    cfg.plain_http = true;
    cfg.authenticate = false;
    let booted = bootstrap::boot(&cfg).context("opening the stores (is the server stopped?)")?;
    let feeder = booted
        .bridge
        .context("the bridge is disabled ([bridge] enabled = false) or the exchange is off")?;
    let deleted = feeder.reset()?;
    eprintln!("deleted {deleted} bridge namespaces; replaying the exchange log");
    let total = feeder.log_end();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} log records ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let (mut sightings, mut retracted) = (0usize, 0usize);
    let (mut refused, mut skipped) = (0usize, 0usize);
    loop {
        // A record that cannot be applied is skipped and counted, never the end of the replay.
        let (step, ticket) = feeder.step_or_skip(args.batch.max(1))?;
        booted.store.durability().wait_blocking(ticket)?;
        sightings += step.sightings;
        retracted += step.retracted;
        refused += step.refused;
        skipped += step.skipped;
        bar.set_position(step.position.min(total));
        if step.at_end {
            break;
        }
    }
    bar.finish();
    booted.store.persist()?;
    eprintln!("done: {sightings} sightings recorded, {retracted} taken back by withdrawals");
    if refused + skipped > 0 {
        eprintln!(
            "not applied: {refused} sightings refused by the store, {skipped} log records skipped (logged above with their seq and uuid)"
        );
    }
    Ok(())
}

/// The configuration file (or the defaults), with the data directory overridden if given.
fn load_config(
    path: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    let mut cfg = match path {
        Some(p) => Config::read(p)?,
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    Ok(cfg)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(args.config.as_deref(), args.data_dir)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    cfg.plain_http |= args.plain_http;
    if args.no_auth {
        cfg.authenticate = false;
    }
    let booted = bootstrap::boot(&cfg).context("starting sighthub")?;
    if let Some((key, path)) = &booted.generated_admin_key {
        // Shown once, on the terminal only (not through the log).
        println!(
            "sighthub: generated an admin API key, stored in {}:",
            path.display()
        );
        println!("{key}");
    }
    if !cfg.authenticate {
        tracing::warn!("authentication is OFF (--no-auth): anyone can read and write");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    rt.block_on(async {
        // Install the signal handlers before announcing the address: a SIGTERM that arrives
        // right after start must still drain and persist, not kill the process.
        let shutdown = shutdown_signal()?;
        let reload = reload_signal()?;
        let server = Server::bind(
            std::sync::Arc::clone(&booted.app),
            cfg.listen,
            booted.tls.clone(),
            sighthub_api::server::ConnLimits::from_config(&cfg),
        )
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = server.local_addr()?;
        tracing::info!("listening on {}://{addr}", server.scheme());
        let sweeper = spawn_sweeper(std::sync::Arc::clone(&booted.store), cfg.sweep_interval);
        let (stop_bridge, bridge_stopped) = tokio::sync::watch::channel(false);
        let bridge = booted
            .bridge
            .clone()
            .map(|feeder| tokio::spawn(feeder.run(bridge_stopped)));
        let (stop_intelmq, intelmq_stopped) = tokio::sync::watch::channel(false);
        let intelmq = match &booted.intelmq {
            Some(i) => Some(
                i.start(intelmq_stopped)
                    .await
                    .context("starting the [intelmq] transports")?,
            ),
            None => None,
        };
        if let Some(r) = &booted.relay {
            r.start().await;
        }
        let reloader = spawn_reloader(reload, booted.relay.clone(), args.config.clone());
        server.run(shutdown).await;
        reloader.abort();
        if let Some(r) = &booted.relay {
            r.stop().await;
        }
        let _ = stop_intelmq.send(true);
        if let Some(i) = intelmq {
            i.join().await;
        }
        sweeper.abort();
        let _ = stop_bridge.send(true);
        if let Some(b) = bridge {
            let _ = b.await;
        }
        anyhow::Ok(())
    })?;
    booted.store.close().context("final persist")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Every file and directory the process creates (database tables, journals, exchange and
/// relay state) is its owner's only: umask 077.
fn private_files() {
    #[cfg(unix)]
    let _previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Moves expired values to `_expired/<ns>` periodically, so consensus is given back even
/// when nobody reads.
fn spawn_sweeper(
    store: std::sync::Arc<sighthub_store::FjallStore>,
    every: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(every.max(1)));
        loop {
            tick.tick().await;
            let s = std::sync::Arc::clone(&store);
            let r = tokio::task::spawn_blocking(move || s.sweep(sighthub_api::app::now())).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "expiry sweep failed");
            }
        }
    })
}

/// Registers SIGHUP now (before the address is announced: a reload signal sent right after
/// start must not kill the process).
#[cfg(unix)]
fn reload_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")
}

#[cfg(not(unix))]
fn reload_signal() -> anyhow::Result<()> {
    Ok(())
}

/// On SIGHUP, re-reads the configuration file and applies its `[relay]` section (peers and
/// pulls added, removed or changed without a restart). Other sections need a restart.
#[cfg(unix)]
fn spawn_reloader(
    mut hup: tokio::signal::unix::Signal,
    relay: Option<std::sync::Arc<sighthub_relay::Relay>>,
    config: Option<std::path::PathBuf>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let (Some(path), Some(relay)) = (&config, &relay) else {
                tracing::warn!("SIGHUP ignored: no --config file, or the exchange is off");
                continue;
            };
            let cfg = Config::read(path).and_then(|c| c.validate().map(|()| c));
            match cfg {
                Ok(c) => {
                    if let Err(e) = relay.reload(c.relay).await {
                        tracing::warn!(error = %e, "SIGHUP: relay configuration refused");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "SIGHUP: configuration not reloaded"),
            }
        }
    })
}

#[cfg(not(unix))]
fn spawn_reloader(
    _hup: (),
    _relay: Option<std::sync::Arc<sighthub_relay::Relay>>,
    _config: Option<std::path::PathBuf>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {})
}

/// Registers SIGTERM and Ctrl-C now; the returned future resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; draining connections");
    })
}
