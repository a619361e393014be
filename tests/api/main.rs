//! Integration tests: one binary; every scenario runs on SQLite and on PostgreSQL against the
//! real app on a loopback port and a real SMTP server inside this process.

mod support;

mod admin;
mod browser;
mod contract;
mod dashboard;
mod defences;
mod digest_flow;
mod dkim;
mod embed;
mod export;
mod feeds;
mod guarantees;
mod health;
mod import;
mod logs;
mod metrics;
mod optin;
mod preferences;
mod privacy;
mod scale;
mod schedules;
mod sender;
mod signup;
mod smtp_selfcheck;
mod suppression;
mod web_version;
