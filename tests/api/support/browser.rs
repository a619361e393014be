//! Headless Chromium driven through chromedriver (WebDriver), for end-to-end tests of the pages.
//!
//! ```ignore
//! let Some(browser) = Browser::start().await else { return };   // None: not installed, not CI
//! let page = browser.session(Viewport::Phone).await;
//! page.goto(&app.url("/admin/login")).await;
//! page.fill("input[name=token]", ADMIN_TOKEN).await;
//! page.click("button[type=submit]").await;
//! page.wait_for_path("/admin").await;
//! page.shot("overview").await;
//! page.assert_no_sideways_scroll("the overview").await;
//! page.close().await;
//! ```
//!
//! Each `Browser` is one chromedriver child process on a free loopback port (light; killed when
//! the last handle goes). Each `Session` is one Chromium (heavy): at most
//! [`MAX_SESSIONS`] run at once in the whole test binary, the others wait for a slot; so a test
//! holds one session at a time (close it before opening the next), or two tests could each hold
//! one and wait for a second forever.

// A toolkit: not every journey uses every helper.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long the waiting helpers wait before they fail the test: generous, since they return as
/// soon as the page is there and a loaded CI machine runs two Chromiums beside the suite.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often they look.
const POLL: Duration = Duration::from_millis(50);
/// Chromium instances that may run at once (this machine has two cores).
pub const MAX_SESSIONS: usize = 2;
static SESSIONS: Semaphore = Semaphore::const_new(MAX_SESSIONS);

/// The size of the page a session shows, in CSS pixels (device pixel ratio 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewport {
    /// 390×844, a phone: mobile emulation (the page's `<meta name="viewport">` applies, touch).
    Phone,
    /// 1280×900, a laptop.
    Desktop,
}

impl Viewport {
    pub const ALL: [Viewport; 2] = [Viewport::Phone, Viewport::Desktop];

    /// (width, height) in CSS pixels.
    pub fn size(self) -> (u32, u32) {
        match self {
            Viewport::Phone => (390, 844),
            Viewport::Desktop => (1280, 900),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Viewport::Phone => "phone",
            Viewport::Desktop => "desktop",
        }
    }
}

/// A running chromedriver. Cheap to clone; the process ends when the last clone (and the last
/// session opened through it) is gone.
#[derive(Clone)]
pub struct Browser {
    driver: Arc<Driver>,
}

struct Driver {
    child: Mutex<Child>,
    port: u16,
    chromium: Option<PathBuf>,
}

/// The running test's name (its thread's), for its screenshots' directory.
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main" && !name.starts_with("tokio-runtime"))
        .unwrap_or("unnamed")
        .to_owned()
}

impl Browser {
    /// Starts chromedriver and waits until it is ready. `None` when chromedriver is not installed
    /// and `CI` is not set (a notice on stderr); in CI that panics.
    pub async fn start() -> Option<Browser> {
        let Some(chromedriver) = find_chromedriver() else {
            let message = "Chromium/chromedriver missing: install chromium chromium-driver \
                           (apt-get install chromium chromium-driver), or set CHROMEDRIVER";
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            eprintln!("{message}: skipping the browser test (set CI to make this fail)");
            return None;
        };
        let chromium = find_chromium();
        let mut last_error = String::new();
        // The port is free when we look; another process may take it before chromedriver binds
        // it, so try again on a fresh one.
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg("--log-level=WARNING")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", chromedriver.display()));
            let driver = Arc::new(Driver {
                child: Mutex::new(child),
                port,
                chromium: chromium.clone(),
            });
            match driver.wait_ready().await {
                Ok(()) => return Some(Browser { driver }),
                Err(e) => last_error = e,
            }
        }
        panic!(
            "chromedriver ({}) did not come up: {last_error}",
            chromedriver.display()
        );
    }

    /// chromedriver's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.driver.port)
    }

    /// A new Chromium window of the given size, with a fresh profile (no cookies). Waits for a
    /// free slot (see [`MAX_SESSIONS`]). Screenshots go under the name of the current test.
    pub async fn session(&self, viewport: Viewport) -> Session {
        self.session_named(viewport, &test_name()).await
    }

    /// As [`session`](Self::session), with script turned off in the pages (as some readers
    /// browse); the test's own script calls still run.
    pub async fn session_without_script(&self, viewport: Viewport) -> Session {
        self.open(viewport, &test_name(), false).await
    }

    /// As [`session`](Self::session), with the screenshots' directory named `test`.
    pub async fn session_named(&self, viewport: Viewport, test: &str) -> Session {
        self.open(viewport, test, true).await
    }

    async fn open(&self, viewport: Viewport, test: &str, script: bool) -> Session {
        let permit = SESSIONS.acquire().await.expect("session semaphore");
        let (width, height) = viewport.size();
        let args = vec![
            "--headless=new".to_owned(),
            // Tests run as root, where Chromium's sandbox cannot start.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            "--force-device-scale-factor=1".to_owned(),
            "--lang=en-GB".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-sync".to_owned(),
            "--mute-audio".to_owned(),
        ];
        // The window size alone is not the page's size; device metrics (CDP
        // Emulation.setDeviceMetricsOverride) make window.innerWidth exact, at ratio 1.
        // With script off, mobile emulation makes chromedriver lose the renderer after a form's
        // post: the phone's size then comes without the touch and mobile flags.
        let mobile = viewport == Viewport::Phone && script;
        let mut chrome = json!({
            "args": args,
            "mobileEmulation": {
                "deviceMetrics": {
                    "width": width,
                    "height": height,
                    "pixelRatio": 1.0,
                    "mobile": mobile,
                    "touch": mobile,
                },
            },
        });
        if let Some(binary) = &self.driver.chromium {
            chrome["binary"] = json!(binary);
        }
        if !script {
            chrome["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
        }
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": chrome,
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| {
                panic!("could not open a Chromium session through chromedriver (is chromium installed?): {e}")
            });
        let id = client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("the WebDriver session's id");

        let dir = tempfile::Builder::new()
            .prefix("bulletin-shots-")
            .tempdir()
            .expect("screenshot temp dir");
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("screenshots")
            .join(sanitise(test));
        std::fs::create_dir_all(&kept).expect("screenshot directory");
        // Last run's pictures of this test at this size would mix with this run's.
        let suffix = format!("-{}.png", viewport.name());
        for entry in std::fs::read_dir(&kept).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(&suffix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }

        let session = Session {
            client,
            viewport,
            id,
            driver: self.driver.clone(),
            shots: dir,
            kept,
            taken: Mutex::new(0),
            closed: false,
            _permit: permit,
        };
        session.check_viewport().await;
        session
    }
}

impl Driver {
    /// Polls chromedriver's /status until it reports ready (or the process exits).
    async fn wait_ready(&self) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let url = format!("http://127.0.0.1:{}/status", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().expect("chromedriver status") {
                return Err(format!("chromedriver exited with {status}"));
            }
            if let Ok(response) = client.get(&url).send().await
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == json!(true)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{url} did not report ready within 30 s"));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // /shutdown quits chromedriver and every Chromium it still runs; kill it if it lingers.
        let _ = raw_http(self.port, "GET", "/shutdown");
        let mut child = self.child.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One Chromium window. Call [`close`](Self::close) at the end; when a test fails before that,
/// dropping it still ends the WebDriver session (and the Chromium process).
pub struct Session {
    client: Client,
    viewport: Viewport,
    id: String,
    driver: Arc<Driver>,
    shots: tempfile::TempDir,
    kept: PathBuf,
    taken: Mutex<u32>,
    closed: bool,
    _permit: SemaphorePermit<'static>,
}

impl Session {
    /// The fantoccini client, for anything the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn viewport(&self) -> Viewport {
        self.viewport
    }

    /// Ends the session (Chromium quits).
    pub async fn close(mut self) {
        if let Err(e) = self.client.clone().close().await {
            eprintln!("closing the browser session: {e}");
        }
        self.closed = true;
    }

    /// Opens `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    /// The current page's path, with its query if any.
    pub async fn path(&self) -> String {
        let url = self.url().await;
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Runs `script` (a function body: `return …`, arguments in `arguments[i]`).
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    /// The first element matching the CSS `selector`, waiting until there is one.
    pub async fn wait_for(&self, selector: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .every(POLL)
            .for_element(Locator::Css(selector))
            .await
        {
            Ok(element) => element,
            Err(CmdError::WaitTimeout) => {
                panic!(
                    "{}",
                    self.failure(&format!("no element matches {selector} after {WAIT:?}"))
                        .await
                )
            }
            Err(e) => panic!("{}", self.failure(&format!("looking for {selector}: {e}")).await),
        }
    }

    /// Waits until the JavaScript expression `condition` is truthy; `what` names it in the
    /// failure message.
    pub async fn wait_until(&self, condition: &str, what: &str) {
        let script = format!("return !!({condition});");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Value::Bool(true)) = self.client.execute(&script, vec![]).await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}",
                    self.failure(&format!("{what}: `{condition}` still false after {WAIT:?}"))
                        .await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the page's visible text contains `text`.
    pub async fn wait_for_text(&self, text: &str) {
        let condition = format!("document.body && document.body.innerText.includes({})", json!(text));
        self.wait_until(&condition, &format!("the text {text:?}")).await;
    }

    /// Waits until the current path (with query) is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let condition = format!(
            "document.readyState === 'complete' && location.pathname + location.search === {}",
            json!(path)
        );
        self.wait_until(&condition, &format!("the page {path}")).await;
    }

    /// Types `text` into the field matching `selector` (emptied first).
    pub async fn fill(&self, selector: &str, text: &str) {
        let field = self.wait_for(selector).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clearing {selector}: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {selector}: {e}"));
    }

    /// Clicks the element matching `selector`. A click that lands on another element (the page
    /// moved between WebDriver's scroll and its click) or on an element the page has since
    /// replaced is tried again, as a reader would, until [`WAIT`] has passed.
    pub async fn click(&self, selector: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let element = self.wait_for(selector).await;
            match element.click().await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && moved(&e) => tokio::time::sleep(POLL).await,
                Err(e) => panic!("{}", self.failure(&format!("clicking {selector}: {e}")).await),
            }
        }
    }

    /// The visible text of the element matching `selector`.
    pub async fn text(&self, selector: &str) -> String {
        let element = self.wait_for(selector).await;
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("the text of {selector}: {e}"))
    }

    /// Saves a PNG of the viewport as `<nn>-<name>-<viewport>.png` (numbered in order) in this
    /// session's temp dir, and a copy under `target/tmp/screenshots/<test>/`; returns the first.
    pub async fn shot(&self, name: &str) -> PathBuf {
        match self.save(name).await {
            Ok((path, _)) => path,
            Err(e) => panic!("screenshot {name}: {e}"),
        }
    }

    /// Takes and writes a screenshot: (the temp dir's file, the kept copy).
    async fn save(&self, name: &str) -> Result<(PathBuf, PathBuf), String> {
        let png = self.client.screenshot().await.map_err(|e| e.to_string())?;
        let n = {
            let mut taken = self.taken.lock().unwrap();
            *taken += 1;
            *taken
        };
        let file = format!("{n:02}-{}-{}.png", sanitise(name), self.viewport.name());
        let (path, kept) = (self.shots.path().join(&file), self.kept.join(&file));
        std::fs::write(&path, &png).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&kept, &png).map_err(|e| format!("{}: {e}", kept.display()))?;
        Ok((path, kept))
    }

    /// Where [`shot`](Self::shot) keeps its copies.
    pub fn shots_dir(&self) -> &Path {
        &self.kept
    }

    /// Fails unless the page fits the viewport's width (no sideways scrolling), naming the
    /// elements that stick out.
    pub async fn assert_no_sideways_scroll(&self, page: &str) {
        let measured = self
            .js(
                r#"
                const root = document.documentElement;
                const width = window.innerWidth;
                const wide = [];
                for (const el of document.body.querySelectorAll('*')) {
                    const r = el.getBoundingClientRect();
                    if (r.right > width + 0.5 || r.left < -0.5) {
                        let name = el.tagName.toLowerCase();
                        if (el.id) name += '#' + el.id;
                        if (el.classList.length) name += '.' + [...el.classList].join('.');
                        wide.push(name + ' [' + Math.round(r.left) + ', ' + Math.round(r.right) + ']');
                    }
                }
                return {scroll: root.scrollWidth, inner: width, wide: wide.slice(0, 10)};
                "#,
                vec![],
            )
            .await;
        let (scroll, inner) = (measured["scroll"].as_u64(), measured["inner"].as_u64());
        let width = self.viewport.size().0;
        if inner != Some(u64::from(width)) {
            let _ = self.save("wrong-width").await;
            panic!(
                "{page} lays out {} px wide on a {} ({width} px): \
                 does it have <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">?",
                inner.unwrap_or(0),
                self.viewport.name(),
            );
        }
        if scroll > inner {
            let _ = self.save("sideways-scroll").await;
            panic!(
                "{page} scrolls sideways on a {} ({}×{}): scrollWidth {} > innerWidth {}; \
                 wider than the viewport: {}",
                self.viewport.name(),
                self.viewport.size().0,
                self.viewport.size().1,
                scroll.unwrap_or(0),
                inner.unwrap_or(0),
                measured["wide"],
            );
        }
    }

    /// The page is as wide as the viewport says (the emulation took). On the phone a page lays
    /// out 980 px wide unless it has a viewport `<meta>`, so measure one that has.
    async fn check_viewport(&self) {
        self.goto("data:text/html,<!DOCTYPE html><meta name=viewport content='width=device-width, initial-scale=1'>")
            .await;
        let size = self
            .js(
                "return [window.innerWidth, window.innerHeight, window.devicePixelRatio];",
                vec![],
            )
            .await;
        let (width, height) = self.viewport.size();
        let got: Vec<f64> = (0..3).map(|i| size[i].as_f64().unwrap_or(f64::NAN)).collect();
        assert_eq!(
            got,
            [f64::from(width), f64::from(height), 1.0],
            "the {} viewport: [innerWidth, innerHeight, devicePixelRatio]",
            self.viewport.name()
        );
    }

    /// `message` with the page's URL and the start of its text, after a screenshot.
    async fn failure(&self, message: &str) -> String {
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let text = self
            .client
            .execute("return document.body ? document.body.innerText : '';", vec![])
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let shot = match self.save("failure").await {
            Ok((_, kept)) => kept.display().to_string(),
            Err(e) => format!("none: {e}"),
        };
        let text: String = text.chars().take(1000).collect();
        // The what comes last: a CI log's tail shows it even when the page text is long.
        format!(
            "page text:\n{text}\n---\n{message}, on {url} ({}; screenshot {shot})",
            self.viewport.name(),
        )
    }
}

/// Whether a click failed because the page changed under it, not because of the element.
fn moved(e: &CmdError) -> bool {
    match e {
        CmdError::Standard(w) => matches!(
            w.error,
            ErrorStatus::ElementClickIntercepted | ErrorStatus::StaleElementReference
        ),
        _ => false,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            // A test that failed before close(): its runtime may be going away, so end the
            // WebDriver session by hand (chromedriver then quits this Chromium).
            let _ = raw_http(self.driver.port, "DELETE", &format!("/session/{}", self.id));
        }
    }
}

/// One HTTP/1.1 request to chromedriver with a plain socket (usable in Drop, without a runtime).
fn raw_http(port: u16, method: &str, path: &str) -> std::io::Result<()> {
    let mut stream = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // Read the head and the body's declared length: chromedriver may keep the connection open.
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        response.extend_from_slice(&buf[..n]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                return Ok(());
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `CHROMEDRIVER` (when set, that or nothing), else `chromedriver` on the PATH, else Debian's.
fn find_chromedriver() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMEDRIVER") {
        return Some(PathBuf::from(path)).filter(|path| is_executable(path));
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chromedriver"))
                .collect()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([
            PathBuf::from("/usr/bin/chromedriver"),
            PathBuf::from("/usr/lib/chromium/chromedriver"),
        ])
        .find(|path| is_executable(path))
}

/// `CHROMIUM`, else Debian's binary itself (its /usr/bin/chromium is a shell wrapper that adds
/// flags of its own), else chromedriver's own search.
fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A file name from a test path or a screenshot name (`browser::x` → `browser-x`).
fn sanitise(name: &str) -> String {
    let name = name.replace("::", "-");
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
