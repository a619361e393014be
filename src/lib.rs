//! Bulletin: newsletter signups with double opt-in, feeds and digests delivered over SMTP.
//!
//! A signup travels: `http::subscriptions` (parse into `domain` types) → `store` (one write
//! transaction: subscription, consent, token, outbox row) → `delivery` (lease, compose with
//! `mail`, send over SMTP or write `.eml`, record).

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod digest;
pub mod domain;
pub mod export;
pub mod feeds;
pub mod http;
pub mod import;
pub mod logging;
pub mod mail;
pub mod privacy;
pub mod schedule;
pub mod signup;
pub mod store;
pub mod telemetry;

pub use app::Application;
pub use config::Config;
