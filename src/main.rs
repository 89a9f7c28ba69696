//! `sighthub`: the binary. Thin glue over `sighthub-node` (the composition root): parse the
//! command line, set up logging and the signals, read the configuration, and hand over.

mod datadir;
mod import_stix;
mod listen;
mod progress;

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
    /// Log format on stderr: `text` (for people) or `json` (one JSON object per line, for
    /// log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, target, fields, message).
    Json,
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
    /// Peering by invitation, with the server running: `invite` asks it for a single-use
    /// token; `join <token>` on the other side redeems it, and both sides then push to each
    /// other (pinned identities, a key each way), without a restart. `--offline` prints the
    /// configuration blocks instead.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Import STIX 2.1 bundles (observed-data, sighting and indicator objects) as sightings:
    /// one file, or every .json file of a directory. Run it with the server stopped; importing
    /// the same bundle again changes nothing.
    #[command(after_help = env_help())]
    ImportStix(import_stix::ImportStixArgs),
    /// Import SightingDB's data: its data directory (`dbdir`: the `*.json.zst` shards of 0.5
    /// to 0.7.8, the single `sightingdb.json` of earlier versions) or one snapshot file. Sets
    /// every value with its count, first/last seen, tags, TTL and hourly stats; consensus is
    /// recomputed. A value sighthub already holds keeps the larger of each. Run it with
    /// sighthub stopped; run it again to resume an interrupted import (a finished one changes
    /// nothing the second time).
    ImportSightingdb(ImportArgs),
    /// Copy this embedded data directory into the clusters another configuration names: the
    /// sightings into Redis (`[storage] backend = "redis"`: every record, consensus, expiry
    /// index, value format and feeder marker) and the exchange into JetStream (`[exchange]
    /// backend = "nats"`: the log with its sequence numbers, seen-set, content window,
    /// consumers), each with a count check at the end. Run it with the server stopped; run it
    /// again to resume an interrupted copy.
    Migrate(MigrateArgs),
    /// Convert SightingDB's sightingdb.toml into a sighthub.toml (listen address, TLS files,
    /// API keys, retention settings) and list what has no equivalent.
    ImportSightingdbConfig(ImportConfigArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// SightingDB's data directory (its `dbdir`), or one snapshot file.
    path: PathBuf,
    /// TOML configuration file (the one the server uses: value formats of namespaces,
    /// [limits], [stats]). Without it, every setting has its default.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory. Overrides the config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Values applied per batch (one atomic commit with the progress marker).
    #[arg(long, default_value_t = sighthub_migrate::import::DEFAULT_BATCH)]
    batch: usize,
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The configuration of the target (its `[storage] backend = "redis"` and/or
    /// `[exchange] backend = "nats"`).
    #[arg(long)]
    to: PathBuf,
    /// The configuration of the source (the embedded data directory's).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The source's data directory. Overrides its config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ImportConfigArgs {
    /// SightingDB's configuration file.
    path: PathBuf,
    /// Where to write the sighthub configuration.
    #[arg(long, short, default_value = "sighthub.toml")]
    output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Print a one-line invitation token (this instance's url, identity and organisation,
    /// and a single-use key for the guest) to give to the other organisation.
    Invite(InviteArgs),
    /// Accept an invitation: redeem it at the inviter and add the link on both sides.
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
    /// Seconds the invitation stays valid (default 7 days, at most 30).
    #[arg(long)]
    expires_in: Option<i64>,
    /// Without the server: print a token whose key the guest's printed block grants (the
    /// operator adds it to the configuration and restarts).
    #[arg(long)]
    offline: bool,
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
    /// Without the servers: print the block to add here and the block to send back.
    #[arg(long)]
    offline: bool,
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().with_ansi(false).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let done = match cli.command {
        Command::Serve(args) => serve(args),
        Command::RebuildSightings(args) => rebuild(args),
        Command::Identity(args) => identity(args),
        Command::Peer(PeerCommand::Invite(args)) => invite(args),
        Command::Peer(PeerCommand::Join(args)) => join(args),
        Command::ImportSightingdb(args) => import_sightingdb(args),
        Command::ImportSightingdbConfig(args) => import_sightingdb_config(args),
        Command::Migrate(args) => migrate(args),
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

/// The file where a serving instance notes the url it listens on.
fn url_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("sighthub.url")
}

/// Calls the running server's admin API for a `peer` command: at its `listen` address
/// (loopback when it listens on every address), pinned on its own identity, with the admin
/// key (`SIGHTHUB_ADMIN_KEY`, else the data directory's `admin.key`).
fn local_admin(
    cfg: &Config,
    path: &[&str],
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let mut addr = cfg.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if cfg.plain_http { "http" } else { "https" };
    // The address the server last bound (see `serve`), else the configured one.
    let base = std::fs::read_to_string(url_file(&cfg.data_dir))
        .ok()
        .map(|u| u.trim().to_owned())
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let identity = if base.starts_with("https://") {
        Some(sighthub_node::boot::identity(cfg).context("reading this instance's identity")?)
    } else {
        None
    };
    let key = match std::env::var(sighthub_node::boot::ADMIN_KEY_ENV) {
        Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
        _ => {
            let f = cfg.data_dir.join(sighthub_node::boot::ADMIN_KEY_FILE);
            std::fs::read_to_string(&f)
                .with_context(|| {
                    format!(
                        "reading the admin key {} (or set {})",
                        f.display(),
                        sighthub_node::boot::ADMIN_KEY_ENV
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(sighthub_node::relay::invite::local_call(
        &base,
        identity,
        &key,
        path,
        &body,
        std::time::Duration::from_secs(cfg.relay.timeout_seconds.max(1) * 2),
    ))
    .map_err(anyhow::Error::msg)
}

fn invite(args: InviteArgs) -> anyhow::Result<()> {
    if !args.offline {
        let cfg = load_config(args.at.config.as_deref(), args.at.data_dir)?;
        let mut body = serde_json::json!({"url": args.url, "name": args.name});
        if let Some(s) = args.expires_in {
            body["expires_in"] = s.into();
        }
        let answer = local_admin(&cfg, &["_api", "peers", "invite"], body)?;
        let token = answer["token"]
            .as_str()
            .context("the server answered no token")?;
        eprintln!("Give this line to the other organisation (a secret, valid once); it runs `sighthub peer join <line> --url <its url> --name <a name for it>` with its server running:");
        println!("{token}");
        return Ok(());
    }
    let (_, id, org) = peer_self(args.at)?;
    let inv = sighthub_node::relay::invite::Invitation::new(&args.url, id, org, &args.name)?;
    eprintln!("Give this line to the other organisation; it runs `sighthub peer join --offline <line> --url <its url> --name <a name for it>` and sends you back what to add:");
    println!("{}", inv.token());
    Ok(())
}

fn join(args: JoinArgs) -> anyhow::Result<()> {
    use sighthub_node::relay::invite;
    let inv = invite::Invitation::parse(&args.token)?;
    if !args.offline {
        let cfg = load_config(args.at.config.as_deref(), args.at.data_dir)?;
        let answer = local_admin(
            &cfg,
            &["_api", "peers", "join"],
            serde_json::json!({"token": args.token, "url": args.url, "name": args.name}),
        )?;
        println!(
            "Joined {} ({}): both sides now push to each other; nothing to restart.",
            inv.name,
            answer["url"].as_str().unwrap_or(&inv.url)
        );
        return Ok(());
    }
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
    let mut progress = progress::Progress::new("rebuild-sightings", "log records");
    let done = node.rebuild(args.batch, |position, total| progress.set(position, total))?;
    progress.finish();
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

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let source = load_config(args.config.as_deref(), args.data_dir)?;
    let target = Config::load(&args.to)?;
    let sightings = target.storage.backend == "redis";
    let exchange = sighthub_node::migrate::exchange_on_nats(&target);
    if !sightings && !exchange {
        anyhow::bail!(
            "{}: the target names no cluster ([storage] backend = \"redis\" and/or [exchange] \
             backend = \"nats\")",
            args.to.display()
        );
    }
    if sightings && source.storage.backend != "embedded" {
        anyhow::bail!(
            "the source's sightings must be an embedded data directory ([storage] backend = \"embedded\")"
        );
    }
    if exchange && sighthub_node::migrate::exchange_on_nats(&source) {
        anyhow::bail!("the source's exchange must be embedded ([exchange] backend = \"embedded\")");
    }
    let _lock = datadir::lock(&source.data_dir)?;
    if sightings {
        let from = sighthub_node::boot::open_store(&source).context("opening the source")?;
        let to = sighthub_node::boot::open_store(&target).context("opening the target")?;
        let mut progress = progress::Progress::new("migrate sightings", "records");
        let done =
            sighthub_node::migrate::copy_sightings(&from, &to, |n, total| progress.set(n, total));
        progress.finish();
        from.close().context("closing the source")?;
        let s = done?;
        if s.resumed {
            println!("sightings: resumed an interrupted migration");
        }
        println!(
            "sightings: {} records copied, {} already there; {} namespace counts checked equal",
            s.records, s.already, s.namespaces
        );
        use sighthub_node::migrate::DocumentCopy;
        for (name, what) in
            sighthub_node::migrate::copy_documents(&source, &to).context("copying the documents")?
        {
            let said = match what {
                DocumentCopy::None => continue,
                DocumentCopy::Copied => "copied",
                DocumentCopy::Already => "already there",
                DocumentCopy::KeptTarget => {
                    "NOT copied: the cluster holds other ones, kept (merge them by hand through                      the admin API)"
                }
            };
            println!("{}: {said}", sighthub_node::migrate::label(name));
        }
    }
    // The exchange after the sightings: the bridge's position (a sightings marker copied
    // above) is a log sequence, which the copy keeps.
    if exchange {
        let mut progress = progress::Progress::new("migrate exchange", "records");
        let done = sighthub_node::migrate::copy_exchange(&source, &target, |p| {
            progress.set(p.records_done, p.records_total)
        });
        progress.finish();
        let c = done.context("copying the exchange")?;
        println!(
            "exchange: {} log records copied ({} in the stream, checked equal), {} seen, {} content \
             window entries, {} consumers",
            c.records, c.records_total, c.seen, c.content, c.consumers
        );
    }
    Ok(())
}

fn import_sightingdb(args: ImportArgs) -> anyhow::Result<()> {
    use sighthub_migrate::import;
    let mut cfg = load_config(args.config.as_deref(), args.data_dir)?;
    // Nothing is served: no listener, TLS or key generation.
    cfg.plain_http = true;
    cfg.authenticate = false;
    let source = import::Source::open(&args.path)?;
    let _lock = datadir::lock(&cfg.data_dir)?;
    let node = sighthub_node::boot(&cfg).context("opening the stores")?;
    let mut progress = progress::Progress::new("import-sightingdb", "bytes read");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let opts = import::Options {
        batch: args.batch,
        now,
    };
    let done = import::import(&*node.store, &source, &opts, &mut progress);
    progress.finish();
    node.close().context("closing the stores")?;
    let s = done?;
    if let Some((file, records)) = &s.resumed {
        println!("resumed an interrupted import at {file}, after its first {records} records");
    }
    println!(
        "imported {} from {} file(s): {} namespaces; values: {} new, {} updated (larger of each kept), {} unchanged",
        args.path.display(),
        s.files,
        s.namespaces,
        s.new,
        s.updated,
        s.unchanged
    );
    println!(
        "consensus: recomputed ({} _all records of SightingDB not imported)",
        s.consensus_recomputed
    );
    if s.skipped_total() > 0 {
        println!("not imported: {} records", s.skipped_total());
        for (reason, (n, examples)) in &s.skipped {
            println!("  {n} × {reason}; e.g. {}", examples.join(" | "));
        }
    }
    if !s.ignored_files.is_empty() {
        println!(
            "ignored (no sightings in them): {}",
            s.ignored_files.join(", ")
        );
    }
    if !s.failed_files.is_empty() {
        for (path, why) in &s.failed_files {
            eprintln!("sighthub: {}: {why}", path.display());
        }
        anyhow::bail!(
            "{} snapshot file(s) could not be read to the end (above); everything else, and what \
             came before the damage in them, was imported. Restore those files from a backup \
             (or take a fresh snapshot with SightingDB) and run the import again: it changes \
             nothing that is already there",
            s.failed_files.len()
        );
    }
    Ok(())
}

fn import_sightingdb_config(args: ImportConfigArgs) -> anyhow::Result<()> {
    let converted = sighthub_migrate::config::convert(&args.path)?;
    if args.output.exists() && !args.force {
        anyhow::bail!(
            "{} exists; give another --output, or --force to replace it",
            args.output.display()
        );
    }
    // Written next to its final place, checked by sighthub's own reader, then renamed: a
    // file that sighthub would refuse is never left behind.
    let mut tmp = args.output.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &converted.toml).with_context(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = Config::load(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!(
            "the configuration converted from {} is not valid for sighthub",
            args.path.display()
        )));
    }
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "wrote {} ({} API keys) from {}",
        args.output.display(),
        converted.keys,
        args.path.display()
    );
    for note in &converted.notes {
        println!("note: {note}");
    }
    if !converted.unmapped.is_empty() {
        println!("no equivalent in sighthub (not carried over):");
        for line in &converted.unmapped {
            println!("  {line}");
        }
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
        let data_dir = node.cfg.data_dir.clone();
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
            // Where the `peer` commands find this server (its bound address, which may be a
            // port the system chose).
            let _ = std::fs::write(url_file(&data_dir), format!("{scheme}://{addr}\n"));
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
