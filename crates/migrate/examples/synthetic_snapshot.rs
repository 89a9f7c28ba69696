//! Writes a snapshot in SightingDB 0.7.8's format (`sighthub_migrate::synthetic`), for the
//! import-rate measurement:
//!
//! ```text
//! cargo run --release -p sighthub-migrate --example synthetic_snapshot -- <dir> [values] [namespaces] [shards]
//! ```
//!
//! Defaults: 1,000,000 values over 20 namespaces in 4 shards.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: synthetic_snapshot <dir> [values] [namespaces] [shards]")?;
    let mut num = |default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (values, namespaces, shards) = (num(1_000_000)?, num(20)?, num(4)?);
    sighthub_migrate::synthetic::write(std::path::Path::new(&dir), values, namespaces, shards)?;
    println!("wrote {values} values over {namespaces} namespaces in {shards} shards into {dir}");
    Ok(())
}
