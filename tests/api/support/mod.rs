pub mod app;
pub mod feed_server;
pub mod smtp;
