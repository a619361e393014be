//! A running Bulletin on a random loopback port, on its own database, sending to its own SMTP
//! server inside the test process.

use std::collections::HashMap;
use std::time::Duration;

use bulletin::store::Store;
use bulletin::{Application, Config};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::smtp::SmtpServer;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// How long a test waits for an email before it fails.
pub const MAIL_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of the test's own, removed when the test ends.
pub enum TestDb {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        name: String,
        admin_url: String,
    },
}

impl TestDb {
    /// A fresh database; `None` when PostgreSQL is unreachable outside CI (in CI that fails).
    pub async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("bulletin.db").display());
                Some(TestDb::Sqlite { url, _dir: dir })
            }
            Backend::Postgres => {
                let admin_url = std::env::var("BULLETIN_TEST_PG")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let conn = sqlx::PgPool::connect(&admin_url).await;
                let pool = match conn {
                    Ok(pool) => pool,
                    Err(e) if std::env::var_os("CI").is_none() => {
                        eprintln!("PostgreSQL unreachable at {admin_url} ({e}): skipping (set CI to make this fail)");
                        return None;
                    }
                    Err(e) => panic!("PostgreSQL unreachable at {admin_url} in CI: {e}"),
                };
                let name = format!("bulletin_test_{:016x}", rand_u64());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let mut url = url::Url::parse(&admin_url).expect("BULLETIN_TEST_PG is a URL");
                url.set_path(&name);
                Some(TestDb::Postgres {
                    url: url.to_string(),
                    name,
                    admin_url,
                })
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name, admin_url, .. } = self {
            let (db, admin_url) = (name.clone(), admin_url.clone());
            // Drop runs inside the test's runtime: use a thread with a runtime of its own.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let pool = sqlx::PgPool::connect(&admin_url).await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await?;
                    pool.close().await;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .join();
            if let Ok(Err(e)) = dropped {
                eprintln!("could not drop test database {name}: {e}");
            }
        }
    }
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

struct Started {
    store: Store,
    stop: oneshot::Sender<()>,
    server: ServerTask,
    routes: Vec<String>,
}

async fn start(env: &HashMap<String, String>, listener: TcpListener) -> Started {
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test configuration");
    let app = Application::with_listener(config, listener).await.expect("app starts");
    let store = app.store().clone();
    let routes = app.route_paths();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Started {
        store,
        stop,
        server,
        routes,
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub smtp: SmtpServer,
    pub store: Store,
    /// The path of every route the app serves.
    pub routes: Vec<String>,
    env: HashMap<String, String>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<ServerTask>,
    // Last: dropped after the app has stopped.
    pub db: TestDb,
}

impl TestApp {
    /// The app with test defaults; `None` only when PostgreSQL is unreachable outside CI.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, &[]).await
    }

    /// The app with extra configuration variables (`BULLETIN_…` = value).
    pub async fn spawn_with(backend: Backend, vars: &[(&str, &str)]) -> Option<TestApp> {
        let db = TestDb::create(backend).await?;
        let smtp = SmtpServer::start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", db.url().to_owned()),
            ("BULLETIN_LISTEN", addr.to_string()),
            ("BULLETIN_PUBLIC_URL", base.clone()),
            ("BULLETIN_SMTP_URL", smtp.url()),
            ("BULLETIN_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("BULLETIN_FROM", "Newsroom <news@bulletin.test>".to_owned()),
            ("BULLETIN_RETRY_BASE", "1s".to_owned()),
            ("BULLETIN_SMTP_POOL", "2".to_owned()),
            // Tests sign many readers up from one address; tests of the limit set it.
            ("BULLETIN_RATE_LIMIT", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in vars {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let Started {
            store,
            stop,
            server,
            routes,
        } = start(&env, listener).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Some(TestApp {
            base,
            client,
            smtp,
            store,
            routes,
            env,
            stop: Some(stop),
            server: Some(server),
            db,
        })
    }

    /// Restarts the app with some configuration variables changed.
    pub async fn restart_with(&mut self, vars: &[(&str, &str)]) {
        for (k, v) in vars {
            self.env.insert((*k).to_owned(), (*v).to_owned());
        }
        self.restart().await;
    }

    /// Stops the app gracefully and starts a new one on the same database and SMTP server.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        self.base = format!("http://{addr}");
        self.env.insert("BULLETIN_LISTEN".into(), addr.to_string());
        self.env.insert("BULLETIN_PUBLIC_URL".into(), self.base.clone());
        let started = start(&self.env, listener).await;
        self.store = started.store;
        self.routes = started.routes;
        self.stop = Some(started.stop);
        self.server = Some(started.server);
    }

    /// The app's configuration, for library calls made beside it (a scheduler tick).
    pub fn config(&self) -> Config {
        Config::from_lookup(|k| self.env.get(k).cloned()).expect("test configuration")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the app as SIGTERM would and waits until it has finished.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
        // The app closed its pool: keep a handle for the test's own checks.
        self.store = Store::connect(self.db.url()).await.expect("reconnect");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.expect("POST")
    }

    /// POSTs a url-encoded form given as pairs (keys may repeat).
    pub async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        self.client.post(self.url(path)).form(pairs).send().await.expect("POST")
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn create_list(&self, slug: &str, name: &str) {
        let response = self
            .admin(reqwest::Method::POST, "/api/lists")
            .json(&json!({"slug": slug, "name": name, "description": format!("About {name}")}))
            .send()
            .await
            .expect("create list");
        assert_eq!(response.status(), 201, "creating list {slug}");
    }

    pub async fn signup_json(&self, email: &str, lists: &[&str]) -> reqwest::Response {
        self.post_json("/subscriptions", &json!({"email": email, "lists": lists}))
            .await
    }

    /// Subscribers of a list as (email, status).
    pub async fn subscribers(&self, list: &str) -> Vec<(String, String)> {
        let body: Value = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/lists/{list}/subscribers?limit=1000"),
            )
            .send()
            .await
            .expect("subscribers")
            .json()
            .await
            .expect("json");
        body["subscribers"]
            .as_array()
            .expect("subscribers array")
            .iter()
            .map(|s| {
                (
                    s["email"].as_str().unwrap_or_default().to_owned(),
                    s["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// Direct SQL for checks the API does not expose (the text must suit both dialects).
impl TestApp {
    pub async fn sql_strings(&self, sql: &'static str) -> Vec<String> {
        match &self.store {
            Store::Sqlite(db) => sqlx::query_scalar(sql).fetch_all(&db.read).await,
            Store::Postgres(db) => sqlx::query_scalar(sql).fetch_all(&db.pool).await,
        }
        .expect(sql)
    }

    /// Runs the `bulletin` command line on this app's database, SMTP server and public URL.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_bulletin"))
            .args(args)
            .env_clear()
            .env("DATABASE_URL", self.db.url())
            .env("BULLETIN_SMTP_URL", self.smtp.url())
            .env("BULLETIN_PUBLIC_URL", &self.base)
            .env("BULLETIN_FROM", "Newsroom <news@bulletin.test>")
            .env("RUST_LOG", "error")
            .current_dir(std::env::temp_dir())
            .output()
            .expect("run bulletin")
    }

    /// The key of signed links, as the app keeps it.
    pub async fn secret(&self) -> Vec<u8> {
        self.store
            .setting_get_or_insert("secret", "unused")
            .await
            .expect("secret")
            .into_bytes()
    }

    /// The unsubscribe token of a subscription, signed as its emails sign it (with its link key).
    pub async fn unsubscribe_token(&self, subscription_id: &str) -> String {
        let id: i64 = subscription_id.parse().expect("a subscription id");
        let info = self
            .store
            .subscription_info(id)
            .await
            .expect("read")
            .expect("the subscription");
        bulletin::domain::sign_link(
            &self.secret().await,
            bulletin::domain::LinkPurpose::Unsubscribe,
            id,
            info.link_key,
        )
    }

    pub async fn sql_exec(&self, sql: &'static str) {
        match &self.store {
            Store::Sqlite(db) => sqlx::query(sql).execute(&db.write).await.map(|_| ()),
            Store::Postgres(db) => sqlx::query(sql).execute(&db.pool).await.map(|_| ()),
        }
        .expect(sql)
    }

    pub async fn sql_exec_with(&self, sql: &'static str, time: chrono::DateTime<chrono::Utc>, text: &str) {
        match &self.store {
            Store::Sqlite(db) => sqlx::query(sql)
                .bind(time)
                .bind(text)
                .execute(&db.write)
                .await
                .map(|_| ()),
            Store::Postgres(db) => sqlx::query(sql)
                .bind(time)
                .bind(text)
                .execute(&db.pool)
                .await
                .map(|_| ()),
        }
        .expect(sql)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A `bulletin` child process, killed when dropped.
pub struct ChildApp {
    pub child: std::process::Child,
    pub base: String,
}

impl ChildApp {
    /// An admin API request to this process.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn create_list(&self, slug: &str, name: &str) {
        let r = self
            .admin(reqwest::Method::POST, "/api/lists")
            .json(&serde_json::json!({"slug": slug, "name": name}))
            .send()
            .await
            .expect("create the list");
        assert_eq!(r.status(), 201);
    }

    /// Confirms the signup of a confirmation email `mail` by posting its token, as the
    /// confirmation page's button does; the token.
    pub async fn confirm(&self, mail: &crate::support::smtp::Received) -> String {
        let link = find_link(
            &mail.text_body(),
            &format!("{}/subscriptions/confirm?token=", self.base),
        )
        .expect("a confirmation link");
        let token = link.split("token=").nth(1).expect("a token").to_owned();
        let r = reqwest::Client::new()
            .post(format!("{}/subscriptions/confirm", self.base))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("confirm");
        assert_eq!(r.status(), 200);
        token
    }

    /// Starts `bulletin serve` on `db`, sending to `smtp`, and waits until it answers.
    pub async fn serve(db: &TestDb, smtp: &SmtpServer, extra: &[(&str, &str)]) -> ChildApp {
        Self::serve_logging_to(db, smtp, extra, std::process::Stdio::inherit()).await
    }

    /// As `serve`, with the child's log (its stderr) written to `log`.
    pub async fn serve_logging_to(
        db: &TestDb,
        smtp: &SmtpServer,
        extra: &[(&str, &str)],
        log: impl Into<std::process::Stdio>,
    ) -> ChildApp {
        // Learn a free port; the child binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bulletin"));
        command
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", db.url())
            .env("BULLETIN_LISTEN", format!("127.0.0.1:{port}"))
            .env("BULLETIN_PUBLIC_URL", &base)
            .env("BULLETIN_SMTP_URL", smtp.url())
            .env("BULLETIN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("BULLETIN_FROM", "Newsroom <news@bulletin.test>")
            .env("BULLETIN_RETRY_BASE", "1s")
            .env("BULLETIN_RATE_LIMIT", "0")
            .env("RUST_LOG", "error")
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn bulletin");
        let app = ChildApp { child, base };
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", app.base)).send().await
                && r.status() == 200
            {
                return app;
            }
            assert!(std::time::Instant::now() < deadline, "bulletin serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "bulletin did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first link in `text` that starts with `prefix`.
pub fn find_link(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// Defines a `sqlite` and a `postgres` test for each scenario function taking a `Backend`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::app::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::app::Backend::Postgres).await
            }
        }
    )*};
}
