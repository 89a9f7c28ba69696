//! The address `serve` listens on, checked before anything is created.
//!
//! `--listen` (and the configuration's `listen`) is an `IP:PORT` or a `HOST:PORT`; a host
//! name is resolved, and the first of its addresses that can be bound is chosen (and said,
//! when there were several). Binding it once here, before the start creates an admin key or
//! a certificate, turns an address in use into one clear error instead of a key printed for a
//! server that then fails. The server binds the chosen address again when it starts.

use anyhow::bail;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs as _};

/// The address to listen on for `given`, or why there is none.
pub fn choose(given: &str) -> anyhow::Result<SocketAddr> {
    let candidates: Vec<SocketAddr> = match given.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => bail!(
            "--listen {given}: not an address ({e}); give IP:PORT or HOST:PORT, for example \
             127.0.0.1:9999 or localhost:9999"
        ),
    };
    let mut refused = Vec::new();
    for addr in &candidates {
        match TcpListener::bind(addr) {
            Ok(probe) => {
                drop(probe);
                if candidates.len() > 1 || given.parse::<SocketAddr>().is_err() {
                    tracing::info!(
                        "{given} resolves to {}; the server binds {addr}",
                        list(&candidates)
                    );
                }
                return Ok(*addr);
            }
            Err(e) => refused.push(format!("{addr}: {}", said(&e))),
        }
    }
    if candidates.is_empty() {
        bail!("--listen {given}: the name resolves to no address; give IP:PORT, for example 127.0.0.1:9999");
    }
    bail!(
        "cannot listen on {given}: {}; stop what listens there, or choose another address \
         with --listen (or `listen` in the configuration)",
        refused.join(", ")
    )
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A bind error in the operator's words.
fn said(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the address is in use (by another sighthub or another program)".into()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this machine has that address".into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_name_is_resolved() {
        let addr = choose("localhost:0").expect("localhost resolves");
        assert!(addr.ip().is_loopback(), "{addr}");
    }

    #[test]
    fn a_port_in_use_is_named() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let e = choose(&format!("127.0.0.1:{port}")).expect_err("in use");
        assert!(e.to_string().contains("in use"), "{e}");
    }

    #[test]
    fn garbage_is_refused_with_an_example() {
        let e = choose("nowhere").expect_err("no port");
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
    }
}
