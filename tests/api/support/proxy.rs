//! A TCP forwarder on a loopback port, to take a real server away from the app and give it back:
//! `cut` closes every connection through it and refuses new ones (as a server that went down),
//! `restore` listens on the same port again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = Proxy {
            addr,
            target,
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let tasks_for_conn = tasks.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks_for_conn.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
            }
        });
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(accept);
    }

    /// Closes the listener and every connection through it; when it returns, the port refuses
    /// connections.
    pub async fn cut(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // An aborted task's future (its listener, its sockets) is dropped before this returns.
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("the proxy's port again");
        self.serve(listener);
    }
}

/// A test database of `backend`'s PostgreSQL behind a proxy: the database, the proxy, and the URL
/// that reaches the database through it. `None` where PostgreSQL is not reachable.
pub async fn proxied_postgres() -> Option<(super::app::TestDb, Proxy, String)> {
    let db = super::app::TestDb::create(super::app::Backend::Postgres).await?;
    let mut url = url::Url::parse(db.url()).expect("the database URL");
    let target: SocketAddr = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    )
    .parse()
    .expect("PostgreSQL's address");
    let proxy = Proxy::start(target).await;
    url.set_port(Some(proxy.addr.port())).expect("a port");
    Some((db, proxy, url.to_string()))
}
