pub mod app;
pub mod browser;
pub mod cluster;
pub mod feed_server;
pub mod fixtures;
pub mod proxy;
pub mod smtp;
pub mod tmpfs;
