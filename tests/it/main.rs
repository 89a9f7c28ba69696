//! Integration tests: every test starts a real `sighthub` process on `127.0.0.1:0`.

mod api;
mod auth;
mod bad_input;
mod bridge;
mod common;
mod crash;
mod exchange;
mod failover;
mod failover_exchange;
mod first_hour;
mod hostile_api;
mod hostile_exchange;
mod import;
mod intelmq;
mod keys;
mod link_takeover;
mod logs;
mod metrics;
mod peering;
mod relay;
mod scale;
mod scale_exchange;
mod stix;
mod tls;
