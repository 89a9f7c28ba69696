//! `sighthub`: the binary. Thin glue over `sighthub-node` (the composition root): parse the
//! command line, set up logging and the signals, read the configuration, and hand over.

mod datadir;
mod import_stix;
mod listen;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sighthub_node::{Config, Signals};
use std::path::PathBuf;
use std::process::ExitCode;

/// The log filter when `RUST_LOG` is not set.
const DEFAULT_LOG: &str = "info,fjall=warn,lsm_tree=warn";

/// The environment variables, shown at the end of `--help` of the commands that read them.
fn env_help() -> String {
    format!(
        "Environment:
  {}  the admin API key; when set, no key is generated or read from
                      <data-dir>/admin.key
  RUST_LOG            what is logged (to stderr) [default: {DEFAULT_LOG}];
                      for example debug, or info,sighthub_relay=debug",
        sighthub_node::ADMIN_KEY_ENV
    )
}

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
    #[command(after_help = env_help())]
    Serve(ServeArgs),
    /// Re-build the sightings recorded from exchanged events by replaying the exchange log
    /// (for example after changing the `[bridge]` mapping). Run it with the server stopped.
    #[command(after_help = env_help())]
    RebuildSightings(RebuildArgs),
    /// Print this instance's identity: `sha256:` and the base64url SHA-256 of its TLS public
    /// key. Peers pin it as `fingerprint = "sha256:…"`. Makes the certificate (with
    /// `[tls] names`) if there is none yet; works while the server runs.
    Identity(IdentityArgs),
    /// Peering by invitation: `invite` prints a one-line token; `join <token>` on the other
    /// side prints the configuration both sides add (pinned identities, a key each way).
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Import STIX 2.1 bundles (observed-data, sighting and indicator objects) as sightings:
    /// one file, or every .json file of a directory. Run it with the server stopped; importing
    /// the same bundle again changes nothing.
    #[command(after_help = env_help())]
    ImportStix(import_stix::ImportStixArgs),
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Print a one-line invitation token (this instance's url, identity and organisation,
    /// and a fresh key for the guest) to give to the other organisation.
    Invite(InviteArgs),
    /// Accept an invitation: print the block to add here and the block to send back.
    Join(JoinArgs),
}

#[derive(clap::Args)]
struct InviteArgs {
    /// This instance's url as the guest reaches it (https://host:port).
    #[arg(long)]
    url: String,
    /// The peer name the guest gives this instance.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    at: IdentityArgs,
}

#[derive(clap::Args)]
struct JoinArgs {
    /// The token `sighthub peer invite` printed on the other side.
    token: String,
    /// This instance's url as the inviter reaches it (https://host:port).
    #[arg(long)]
    url: String,
    /// The peer name the inviter gives this instance.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    at: IdentityArgs,
}

#[derive(clap::Args)]
struct IdentityArgs {
    /// TOML configuration file (the one the server uses).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory. Overrides the config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RebuildArgs {
    /// TOML configuration file (the one the server uses). Without it, every setting has its
    /// default.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory. Overrides the config.
    #[arg(long, help = with_default("Data directory. Overrides the config.", |c| c.data_dir.display().to_string()))]
    data_dir: Option<PathBuf>,
    /// Log records applied per batch.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see docs/sighthub.example.toml). Without it, every setting
    /// has its default.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (database, TLS pair, admin key). Overrides the config.
    #[arg(long, help = with_default(
        "Data directory (database, TLS pair, admin key). Overrides the config.",
        |c| c.data_dir.display().to_string(),
    ))]
    data_dir: Option<PathBuf>,
    /// Address to listen on: IP:PORT or HOST:PORT. Overrides the config.
    #[arg(long, value_name = "ADDRESS", help = with_default(
        "Address to listen on: IP:PORT, or HOST:PORT (localhost:9999; the first of its addresses \
         that can be bound is used). Overrides the config.",
        |c| c.listen.to_string(),
    ))]
    listen: Option<String>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Turn API-key authentication off.
    #[arg(long)]
    no_auth: bool,
}

/// An option's help followed by its default, taken from [`Config::default`] (the one place
/// defaults are set), as clap shows `[default: …]`.
fn with_default(help: &str, value: fn(&Config) -> String) -> String {
    format!("{help} [default: {}]", value(&Config::default()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    private_files();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let done = match cli.command {
        Command::Serve(args) => serve(args),
        Command::RebuildSightings(args) => rebuild(args),
        Command::Identity(args) => identity(args),
        Command::Peer(PeerCommand::Invite(args)) => invite(args),
        Command::Peer(PeerCommand::Join(args)) => join(args),
        Command::ImportStix(args) => load_config(args.config.as_deref(), args.data_dir.clone())
            .and_then(|cfg| import_stix::run(args, cfg)),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error as the operator reads it: its message, then each cause that adds something. A
/// cause whose text the lines above already contain (a library error that quotes its source)
/// is left out, so nothing is said twice.
fn report(e: &anyhow::Error) -> String {
    let mut out = format!("sighthub: error: {e}");
    let mut said = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        let text = text.trim();
        if said.contains(text) {
            continue;
        }
        out.push_str("\n  because: ");
        out.push_str(text);
        said.push_str(text);
    }
    out
}

/// The configuration, identity and organisation of the instance a `peer` command is about.
fn peer_self(
    at: IdentityArgs,
) -> anyhow::Result<(
    Config,
    sighthub_node::relay::Fingerprint,
    sighthub_node::relay::invite::Uuid,
)> {
    let cfg = load_config(at.config.as_deref(), at.data_dir)?;
    let org = cfg.exchange.org.context(
        "set [exchange] org in the configuration (GET /iep04/status shows the one generated at the first start)",
    )?;
    let id = sighthub_node::boot::identity(&cfg).context("reading this instance's identity")?;
    Ok((cfg, id, org))
}

fn invite(args: InviteArgs) -> anyhow::Result<()> {
    let (_, id, org) = peer_self(args.at)?;
    let inv = sighthub_node::relay::invite::Invitation::new(&args.url, id, org, &args.name)?;
    eprintln!("Give this line to the other organisation; it runs `sighthub peer join <line> --url <its url> --name <a name for it>` and sends you back what to add:");
    println!("{}", inv.token());
    Ok(())
}

fn join(args: JoinArgs) -> anyhow::Result<()> {
    use sighthub_node::relay::invite;
    let inv = invite::Invitation::parse(&args.token)?;
    let (_, id, org) = peer_self(args.at)?;
    let guest = invite::Guest {
        url: args.url,
        fingerprint: id,
        org,
        name: args.name,
    };
    let joined = invite::join(&inv, &guest)?;
    println!("# 1. Add to THIS instance's configuration, then restart it:\n");
    println!("{}", joined.here);
    println!(
        "# 2. Send to the inviter ({}), to add to its configuration, then restart it:\n",
        inv.name
    );
    println!("{}", joined.there);
    Ok(())
}

fn identity(args: IdentityArgs) -> anyhow::Result<()> {
    let cfg = load_config(args.config.as_deref(), args.data_dir)?;
    let id = sighthub_node::boot::identity(&cfg).context("reading this instance's identity")?;
    println!("{id}");
    Ok(())
}

fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(args.config.as_deref(), args.data_dir)?;
    // No listener, no TLS and no key generation are needed to replay the log.
    cfg.plain_http = true;
    cfg.authenticate = false;
    let _lock = datadir::lock(&cfg.data_dir)?;
    let node = sighthub_node::boot(&cfg).context("opening the stores")?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} log records ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let done = node.rebuild(args.batch, |position, total| {
        bar.set_length(total);
        bar.set_position(position);
    })?;
    bar.finish();
    eprintln!(
        "deleted {} bridge namespaces and replayed the exchange log",
        done.namespaces_deleted
    );
    eprintln!(
        "done: {} sightings recorded, {} taken back by withdrawals",
        done.sightings, done.retracted
    );
    if done.refused + done.skipped > 0 {
        eprintln!(
            "not applied: {} sightings refused by the store, {} log records skipped (logged above with their seq and uuid)",
            done.refused, done.skipped
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
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    Ok(cfg)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(args.config.as_deref(), args.data_dir)?;
    cfg.plain_http |= args.plain_http;
    if args.no_auth {
        cfg.authenticate = false;
    }
    // Everything that can stop a start is checked before anything is created (a key, a
    // certificate): the data directory (writable, not in use) and the address (free).
    let _lock = datadir::lock(&cfg.data_dir)?;
    cfg.listen = match &args.listen {
        Some(given) => listen::choose(given)?,
        None => listen::choose(&cfg.listen.to_string())?,
    };
    let key_file = cfg.data_dir.join(sighthub_node::boot::ADMIN_KEY_FILE);
    let had_key = key_file.exists();
    let node = match sighthub_node::boot(&cfg) {
        Ok(node) => node,
        Err(e) => {
            if !had_key {
                forget_unshown_key(&key_file);
            }
            return Err(anyhow::Error::new(e).context("starting sighthub"));
        }
    };
    let generated = node.generated_admin_key.clone();
    let shown = std::cell::Cell::new(false);
    if !cfg.authenticate {
        tracing::warn!("authentication is OFF (--no-auth): anyone can read and write");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let served = rt.block_on(async {
        // Install the signal handlers before announcing the address: a SIGTERM that arrives
        // right after start must still drain and persist, not kill the process.
        let signals = Signals {
            shutdown: shutdown_signal()?,
            #[cfg(unix)]
            reload: Some(
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .context("installing the SIGHUP handler")?,
            ),
            config_path: args.config.clone(),
        };
        node.serve(signals, |scheme, addr| {
            if let Some((key, path)) = &generated {
                // Shown once, on the terminal only (not through the log), and only once the
                // server is listening: never a key of a server that failed to start.
                println!(
                    "sighthub: generated an admin API key, stored in {}:",
                    path.display()
                );
                println!("{key}");
                shown.set(true);
            }
            tracing::info!("listening on {scheme}://{addr}");
        })
        .await
        .context("serving")
    });
    if let (Err(_), Some((_, path)), false) = (&served, &generated, shown.get()) {
        forget_unshown_key(path);
    }
    served?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Removes the admin key a start that failed generated and never showed, so that the next
/// start generates one and shows it (a key nobody saw would only be found in the file).
fn forget_unshown_key(path: &std::path::Path) {
    if std::fs::remove_file(path).is_ok() {
        tracing::debug!(path = %path.display(), "removed the admin key of a failed start");
    }
}

/// Every file and directory the process creates (database tables, journals, exchange and
/// relay state) is its owner's only: umask 077.
fn private_files() {
    #[cfg(unix)]
    let _previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
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
