//! The web console in a real headless browser (Debian's `chromium`, driven over W3C WebDriver
//! by `chromedriver`, from this test with a small client over reqwest): `railyard dev` with the
//! demo estate (its catalog pointed at gates this test serves, the demo inventory imported),
//! then, as a user would —
//! - an operator sees `orders-v3` appear in the release list pushed by the server (the list is
//!   never reloaded and does not poll), then follows it on its page: the plan's steps turn
//!   green live, clicking an edge shows its rule and reason, the approval banner names who
//!   must act, and a hold shows on the page within a measured delay with the owner team;
//! - an approver signs in, approves through the dialog and sees the release complete;
//! - `pricing-6` fails its production gate: the page shows the rollback, the observation and
//!   the owning team from the catalog;
//! - `orders-v4` is refused: the page lists each reason with its remedy;
//! - the plan preview: a pasted release shows its plan (graph, each edge's rule and reason per
//!   environment), an unsafe one its refusal with remedies, a broken one where it is broken;
//! - the estate page shows what runs in production and the queue map (who emits which
//!   version, who reads it);
//! - an auditor sees no action button, an approve forced through the API answers 403, and
//!   `audit verify` passes from the audit page.
//!
//! Screenshots of each stage go to `target/console-screenshots/` on every run; with
//! `RAILYARD_UPDATE_SCREENSHOT=1` the approval stage is also written to `docs/console.png`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long any one thing the test waits for may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// How often the page looks again at what a wait waits for (in the browser, not here).
const POLL_MS: u64 = 20;

fn browser_binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is missing: run `just setup` (it installs Debian's chromium and chromium-driver), or set {var}",
        path.display()
    );
    path
}

/// A free local port (bound, then released for the child to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills and reaps a child when dropped (a failed assertion included).
struct Reaped(Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The health endpoints the demo catalog's gates ask (`GET /health/<service>/<env>`): healthy
/// unless marked failing, as the demo serves them.
struct Health {
    addr: String,
    failing: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Health {
    fn start() -> Health {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let failing = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (failing.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let bad = f
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|p| path == format!("/health/{p}"));
                let (status, body) = if bad {
                    ("500 Internal Server Error", r#"{"status":"error"}"#)
                } else {
                    ("200 OK", r#"{"status":"ok"}"#)
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Health {
            addr,
            failing,
            stop,
        }
    }

    fn fail(&self, service_env: &str) {
        self.failing.lock().unwrap().push(service_env.to_owned());
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// A W3C WebDriver session, spoken over HTTP with reqwest.
struct Browser {
    http: reqwest::blocking::Client,
    base: String,
    _driver: Reaped,
    shots: PathBuf,
}

impl Browser {
    fn start(profile: &Path, shots: PathBuf) -> Browser {
        let chromium = browser_binary("CHROMIUM", "/usr/bin/chromium");
        let driver = browser_binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let mut child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = child.stdout.take().unwrap();
        let driver = Reaped(Some(child));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx
                .recv_timeout(DEADLINE)
                .expect("chromedriver says it started");
            if line.contains("started successfully") {
                break;
            }
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(DEADLINE + Duration::from_secs(30))
            .build()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let session: Value = http
            .post(format!("{root}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
            }}}))
            .send()
            .and_then(|r| r.json())
            .expect("chromedriver opens a session");
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_owned();
        std::fs::create_dir_all(&shots).unwrap();
        let timeouts: Value = http
            .post(format!("{root}/session/{id}/timeouts"))
            .json(&json!({"script": (DEADLINE + Duration::from_secs(10)).as_millis() as u64}))
            .send()
            .and_then(|r| r.json())
            .expect("chromedriver sets the script timeout");
        assert!(timeouts["value"].is_null(), "{timeouts}");
        Browser {
            http,
            base: format!("{root}/session/{id}"),
            _driver: driver,
            shots,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|error| panic!("webdriver {path}: {error}"));
        if answer["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            reqwest::Method::POST,
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Clicks `css` as a user does (the element must be visible and not covered).
    fn click(&self, css: &str) {
        self.wait_for(
            &format!("{css} to be there"),
            &format!("return !!document.querySelector({css:?})"),
        );
        let element = self.element(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        );
    }

    /// Focuses `css` and presses Enter on it, as a keyboard user does.
    fn press_enter_on(&self, css: &str) {
        let focused = self.js(
            "const e = document.querySelector(arguments[0]); if (!e) return false; e.focus(); return document.activeElement === e;",
            json!([css]),
        );
        assert_eq!(focused, true, "{css} takes the keyboard focus");
        self.call(
            reqwest::Method::POST,
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": "\u{E007}"},
                {"type": "keyUp", "value": "\u{E007}"},
            ]}]}),
        );
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({"text": text}),
        );
    }

    fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until `script` (a function body) returns something truthy in the page, looking
    /// again every few milliseconds in the browser itself, for at most [`DEADLINE`]; returns
    /// the value and how long it took.
    fn wait_for(&self, what: &str, script: &str) -> (Value, Duration) {
        let started = Instant::now();
        let waiter = format!(
            "const done = arguments[arguments.length - 1];
             const deadline = Date.now() + {deadline};
             const check = () => {{ {script} }};
             const tick = () => {{
               let value = null;
               try {{ value = check(); }} catch (error) {{ value = null; }}
               if (value) return done(value);
               if (Date.now() > deadline) return done(null);
               setTimeout(tick, {POLL_MS});
             }};
             tick();",
            deadline = DEADLINE.as_millis()
        );
        let value = self.call(
            reqwest::Method::POST,
            "/execute/async",
            json!({"script": waiter, "args": []}),
        );
        if value.is_null() || value == false {
            self.screenshot("timeout");
            panic!(
                "the page did not show {what} within {DEADLINE:?}; notice: {:?}; main: {:.2000}",
                self.text("#notice"),
                self.text("main")
            );
        }
        (value, started.elapsed())
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.call(reqwest::Method::GET, "/screenshot", Value::Null);
        let png = base64_decode(data.as_str().unwrap());
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    fn sign_in(&self, base: &str, token: &str) {
        self.js("sessionStorage.clear(); return true;", json!([]));
        self.open(&format!("{base}/#/signin"));
        self.wait_for(
            "the sign-in form",
            "return !!document.querySelector('#token')",
        );
        self.type_into("#token", token);
        self.click("#signin-submit");
        self.wait_for(
            "who is signed in",
            "return document.querySelector('#whoami').textContent",
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

struct Token {
    publisher: String,
    operator: String,
    approver: String,
    auditor: String,
}

/// A tokens file with one identity per role; alice is one of the estate's release managers.
fn tokens_file(path: &Path) -> Token {
    use railyard_http::{Role, generate_token};
    let mut file = String::new();
    let mut make = |identity: &str, role: Role, aliases: Vec<String>| {
        let (token, entry) = generate_token(identity, [role].into(), aliases);
        file.push_str(&format!(
            "[[tokens]]\nidentity = {:?}\nroles = [{:?}]\nsha256 = {:?}\naliases = {:?}\n\n",
            entry.identity,
            role.as_str(),
            entry.sha256,
            entry.aliases
        ));
        token
    };
    let token = Token {
        publisher: make("ci:console-test", Role::Publisher, vec![]),
        operator: make("olivia", Role::Operator, vec![]),
        approver: make("alice", Role::Approver, vec!["github:alice".into()]),
        auditor: make("audrey", Role::Auditor, vec![]),
    };
    std::fs::write(path, file).unwrap();
    token
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

fn submit(addr: &str, token: &str, file: &str) {
    let body = std::fs::read_to_string(examples().join(file)).unwrap();
    let (status, answer) = common::http(addr, "POST", "/v1/releases", Some(token), &body);
    assert_eq!(status, 202, "submit {file}: {answer}");
}

fn release_page(browser: &Browser, base: &str, id: &str) {
    browser.open(&format!("{base}/#/releases/{id}"));
    browser.wait_for(
        &format!("the page of {id}"),
        &format!("return document.querySelector('#release-status') && document.querySelector('h1').textContent.startsWith({id:?})"),
    );
}

fn status_is(browser: &Browser, what: &str, status: &str) -> Duration {
    browser
        .wait_for(
            what,
            &format!("const s = document.querySelector('#release-status [data-status]'); return s && s.dataset.status === {status:?}"),
        )
        .1
}

/// Approves the release on the open page through its button and the confirm dialog.
fn approve_on_page(browser: &Browser, comment: &str) {
    browser.click("button[data-action=approve]");
    browser.wait_for(
        "the confirm dialog",
        "return document.querySelector('#confirm').open",
    );
    browser.type_into("#confirm-reason", comment);
    browser.click("#confirm-ok");
    browser.wait_for(
        "the approval to be accepted",
        "const n = document.querySelector('#notice'); return !n.hidden && n.textContent.startsWith('Approve')",
    );
    let notice = browser.text("#notice");
    assert!(notice.starts_with("Approve: "), "{notice}");
}

#[test]
fn the_console_follows_acts_on_and_explains_the_demo_releases() {
    let dir = tempfile::tempdir().unwrap();
    let health = Health::start();
    let catalog = std::fs::read_to_string(examples().join("railyard.toml"))
        .unwrap()
        .replace("http://127.0.0.1:7801", &format!("http://{}", health.addr));
    std::fs::write(dir.path().join("railyard.toml"), catalog).unwrap();
    let tokens = tokens_file(&dir.path().join("tokens.toml"));

    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .arg("dev")
        .arg("--catalog")
        .arg(dir.path().join("railyard.toml"))
        .arg("--tokens-file")
        .arg(dir.path().join("tokens.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0");
    let dev = common::start_dev(command);
    let dev_child = Reaped(Some(dev.child));
    let addr = dev.addr.clone();
    let base = format!("http://{addr}");
    let nats = dev
        .ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("nats="))
        .expect("the ready line names nats")
        .to_owned();
    let import = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(["inventory", "import"])
        .arg(examples().join("inventory.json"))
        .args(["--nats-url", &nats])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "inventory import: {}",
        String::from_utf8_lossy(&import.stderr)
    );

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    let browser = Browser::start(&dir.path().join("profile"), shots.clone());

    // Signed out, the page asks for a token, and a wrong one is refused in words.
    browser.open(&format!("{base}/"));
    browser.wait_for(
        "the sign-in form",
        "return !!document.querySelector('#token')",
    );
    browser.type_into("#token", "ry_not-a-token");
    browser.click("#signin-submit");
    let (notice, _) = browser.wait_for(
        "the refusal of a wrong token",
        "const n = document.querySelector('#notice'); return !n.hidden && n.textContent",
    );
    assert!(
        notice.as_str().unwrap().contains("401"),
        "a wrong token is refused: {notice}"
    );

    // 1. The operator follows orders-v3 from the list to its page.
    browser.sign_in(&base, &tokens.operator);
    assert!(browser.text("#whoami").contains("olivia (operator)"));
    // The list is live by push: a new release appears on the page as it is, without a reload.
    browser.wait_for(
        "the release list following the server's pushes",
        "const l = document.querySelector('#list-live'); return l && l.dataset.state === 'live' && document.querySelector('#release-rows')",
    );
    browser.js("window.__listDocument = 'yes'; return true;", json!([]));
    let sent = Instant::now();
    submit(&addr, &tokens.publisher, "release-orders-v3.toml");
    browser.wait_for(
        "orders-v3 in the list",
        "return !!document.querySelector('tr[data-release=\"orders-v3\"] a')",
    );
    println!("list: orders-v3 submitted to shown {:?}", sent.elapsed());
    // Its row follows it in place: planned, then where it is.
    browser.wait_for(
        "orders-v3's row updated to in progress",
        "const r = document.querySelector('tr[data-release=\"orders-v3\"]'); return r && r.querySelector('[data-status=planned]') && r.querySelector('.env.current')",
    );
    assert_eq!(
        browser.js("return window.__listDocument || null", json!([])),
        "yes",
        "the new release appeared without a reload"
    );
    browser.click("tr[data-release=\"orders-v3\"] a");
    browser.wait_for(
        "the plan of orders-v3",
        "return document.querySelectorAll('svg.plan g.node').length > 0",
    );
    let steps = browser
        .js(
            "return document.querySelectorAll('svg.plan g.node').length",
            json!([]),
        )
        .as_u64()
        .unwrap();
    // Live: a step turns green while the release is still under way, on a page never reloaded.
    browser.js("window.__sameDocument = 'yes'; return true;", json!([]));
    browser.wait_for(
        "a step to turn green while the release runs",
        "return document.querySelector('svg.plan g.node[data-status=succeeded]') && document.querySelector('#release-status [data-status]').dataset.status === 'planned'",
    );
    let critical = browser
        .js(
            "return document.querySelectorAll('svg.plan g.node.critical').length",
            json!([]),
        )
        .as_u64()
        .unwrap();
    assert!(
        critical >= 2,
        "the critical path is marked ({critical} nodes)"
    );
    // An edge explains itself, reached with the keyboard.
    browser.press_enter_on("svg.plan g.edge");
    let rule = browser.text("#detail-rule");
    let reason = browser.text("#detail-reason");
    assert!(
        !rule.is_empty() && !reason.is_empty(),
        "edge detail: {rule} / {reason}"
    );
    // The approval banner names who must act; an operator gets no approve button.
    let (banner, _) = browser.wait_for(
        "the approval banner",
        "const b = document.querySelector('#banner'); return b.textContent.includes('Waits for approval') && b.textContent",
    );
    let banner = banner.as_str().unwrap().to_owned();
    assert!(
        banner.contains("production:approve:orders-v3"),
        "banner: {banner}"
    );
    let green = browser
        .js(
            "return document.querySelectorAll('svg.plan g.node[data-status=succeeded]').length",
            json!([]),
        )
        .as_u64()
        .unwrap();
    assert!(
        green >= 2 && green < steps,
        "{green} of {steps} steps done before the approval"
    );
    assert_eq!(
        browser.js("return window.__sameDocument || null", json!([])),
        "yes",
        "the steps turned green without a reload"
    );
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('button[data-action=approve]').length",
            json!([])
        ),
        0
    );
    browser.screenshot("1-operator-waits-for-approval");

    // The operator holds it: the hold shows on the page, timed from the confirm click.
    browser.click("button[data-action=hold]");
    browser.wait_for(
        "the confirm dialog",
        "return document.querySelector('#confirm').open",
    );
    browser.type_into("#confirm-reason", "db latency");
    browser.click("#confirm-ok");
    let held = status_is(&browser, "the release held", "held");
    let banner = browser.text("#banner");
    assert!(
        banner.contains("olivia") && banner.contains("db latency"),
        "banner: {banner}"
    );
    let owner = browser.text("#banner-owner");
    assert!(
        owner.contains("team-orders (orders-api"),
        "the hold names the owner team from the catalog: {owner}"
    );
    println!("hold: confirm click to the page showing it held: {held:?}");
    // An event appended behind the page's back (a resume through the API) shows within 500 ms.
    // The page notes (on the wall clock, as this test does) when the event reaches its
    // timeline (the SSE frame, handled) and when the status shows it (the refresh painted).
    browser.js(
        "const seen = () => document.querySelectorAll('#timeline li[data-type=\"release.resumed\"]').length;
         const before = seen();
         performance.clearResourceTimings();
         window.__resume = {};
         new MutationObserver(() => {
           const w = window.__resume;
           if (!w.event && seen() > before) w.event = Date.now();
           const s = document.querySelector('#release-status [data-status]');
           if (!w.shown && s && s.dataset.status === 'planned') w.shown = Date.now();
         }).observe(document.querySelector('main'), { subtree: true, childList: true, attributes: true });
         return true;",
        json!([]),
    );
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let sent_ms = wall();
    let sent = Instant::now();
    let (status, answer) = common::http(
        &addr,
        "POST",
        "/v1/releases/orders-v3/resume",
        Some(&tokens.operator),
        "",
    );
    assert_eq!(status, 202, "resume: {answer}");
    let appended = sent.elapsed();
    status_is(&browser, "the release resumed", "planned");
    let polled = sent.elapsed() - appended;
    let marks = browser.js("return window.__resume", json!([]));
    let since_sent = |mark: &str| {
        marks[mark]
            .as_u64()
            .map(|at| Duration::from_millis(at.saturating_sub(sent_ms)))
    };
    let (event, painted) = (since_sent("event"), since_sent("shown"));
    // The page's requests for the release's status after the send: when each started, when
    // the server's answer began and when it ended (the browser's resource timing).
    let fetches = browser.js(
        "const from = arguments[0] - performance.timeOrigin;
         return performance.getEntriesByType('resource')
           .filter((e) => e.name.endsWith('/v1/releases/orders-v3') && e.startTime >= from)
           .map((e) => [Math.round(e.startTime - from), Math.round(e.requestStart - from), Math.round(e.responseStart - from), Math.round(e.responseEnd - from)]);",
        json!([sent_ms]),
    );
    println!(
        "resume: status requests after the send [start, request sent, answer began, ended] ms: {fetches}"
    );
    // The page's own mark when it has one, else what the test's polling saw.
    let shown = painted.map_or(polled, |painted| painted.saturating_sub(appended));
    println!(
        "resume: appended in {appended:?}; from the send, the event on the page at {event:?}, the status painted at {painted:?}; {shown:?} after the append answered (the test's polling saw it {polled:?} after)"
    );
    // The goal is 500 ms (measured here: 0.07-0.17 s after the append answered, in a debug
    // build on 2 busy cores); the bound leaves room for a loaded CI machine.
    assert!(
        shown < Duration::from_secs(1),
        "an appended event shows on the page within 1 s, took {shown:?}"
    );

    // 2. The approver signs in, approves through the dialog, and sees it complete.
    browser.sign_in(&base, &tokens.approver);
    release_page(&browser, &base, "orders-v3");
    browser.wait_for(
        "the approve button",
        "return !!document.querySelector('button[data-action=approve]')",
    );
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('button[data-action=hold]').length",
            json!([])
        ),
        0,
        "an approver gets no operator button"
    );
    let approval_shot = browser.screenshot("2-approver-before-approving");
    if std::env::var_os("RAILYARD_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(
            &approval_shot,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console.png"),
        )
        .unwrap();
    }
    approve_on_page(&browser, "ship it");
    status_is(&browser, "orders-v3 completed", "completed");
    browser.wait_for(
        "every step green",
        "return [...document.querySelectorAll('svg.plan g.node')].every(n => n.dataset.status === 'succeeded')",
    );
    browser.wait_for(
        "the approval shown as granted by alice",
        "return document.querySelector('#approvals').textContent.includes('granted by alice')",
    );
    browser.screenshot("3-completed");

    // 3. pricing-6 fails its production gate and is rolled back; the page says why.
    health.fail("pricing/production");
    submit(&addr, &tokens.publisher, "release-pricing-6.toml");
    release_page(&browser, &base, "pricing-6");
    browser.wait_for(
        "the approve button of pricing-6",
        "return !!document.querySelector('button[data-action=approve]')",
    );
    approve_on_page(&browser, "pricing 6");
    status_is(&browser, "pricing-6 rolled back", "rolled_back");
    let banner = browser.text("#banner");
    assert!(
        banner.contains("Rolled back")
            && banner.contains("Gate failed at production:verify:pricing")
            && banner.contains("observed status 500"),
        "banner: {banner}"
    );
    assert!(browser.text("#gates").contains("✗ failed"));
    let owner = browser.text("#banner-owner");
    assert!(
        owner.contains("team-pricing (pricing)"),
        "the rollback names the owner team from the catalog: {owner}"
    );
    browser.screenshot("4-rolled-back");

    // 4. orders-v4 is refused: each reason with its remedy.
    submit(&addr, &tokens.publisher, "release-orders-v4-unsafe.toml");
    release_page(&browser, &base, "orders-v4");
    status_is(&browser, "orders-v4 refused", "rejected");
    let refusals = browser.text("#refusals");
    assert!(
        refusals.contains("email-worker") && refusals.contains("Remedy:"),
        "refusals: {refusals}"
    );
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#refusals .remedy').length >= 1",
            json!([])
        ),
        true
    );
    browser.screenshot("5-refused");

    // The estate: what runs in production now, and the contract map that refused orders-v4.
    browser.open(&format!("{base}/#/estate"));
    let (queue, _) = browser.wait_for(
        "production's orders-events queue",
        "const r = document.querySelector('section[data-env=production] tr[data-queue=orders-events]'); return r && r.textContent",
    );
    let queue = queue.as_str().unwrap().to_owned();
    assert!(
        queue.contains("orders-api: v3") && queue.contains("email-worker: 2..=3 ✓"),
        "production's orders-events: {queue}"
    );
    let orders = browser.text("section[data-env=production] tr[data-service=orders-api]");
    assert!(
        orders.contains("2.4.0"),
        "orders-api in production: {orders}"
    );
    browser.screenshot("6-estate");

    // The plan preview: paste a release and see its plan, against what runs now; nothing is
    // submitted.
    browser.open(&format!("{base}/#/preview"));
    let paste = |file: &str| {
        browser.wait_for(
            "the preview form",
            "return !!document.querySelector('#preview-text')",
        );
        let text = file.to_owned();
        browser.js(
            "const t = document.querySelector('#preview-text'); t.value = arguments[0]; document.querySelector('#preview-result').replaceChildren(); return true;",
            json!([text]),
        );
        browser.click("#preview-run");
    };
    paste(&std::fs::read_to_string(examples().join("release-billing-ledger.toml")).unwrap());
    browser.wait_for(
        "the preview's plan",
        "const o = document.querySelector('#preview-outcome'); return o && o.dataset.outcome === 'planned' && document.querySelectorAll('#preview-graph svg.plan g.node').length > 0",
    );
    let edges = browser.text("#preview-edges");
    assert!(
        edges.contains("production") && edges.contains("waits for"),
        "each edge with its rule and reason, per environment: {edges}"
    );
    browser.press_enter_on("#preview-graph svg.plan g.edge");
    assert!(
        browser.text("#preview-detail").contains("Rule:"),
        "an edge of the preview explains itself"
    );
    browser.screenshot("8-preview-plan");
    paste(&std::fs::read_to_string(examples().join("release-orders-v4-unsafe.toml")).unwrap());
    browser.wait_for(
        "the preview's refusal",
        "const o = document.querySelector('#preview-outcome'); return o && o.dataset.outcome === 'refused' && document.querySelectorAll('#preview-refusals .remedy').length > 0",
    );
    assert!(browser.text("#preview-refusals").contains("email-worker"));
    browser.screenshot("9-preview-refused");
    paste("id = \"broken\"\n[[changes]]\nservice = \"pricing\"\nversion = 7\n");
    let (path, _) = browser.wait_for(
        "where the pasted file is broken",
        "const e = document.querySelector('#preview-error'); return e && e.dataset.path",
    );
    assert_eq!(path, "release.changes[0].version");
    assert!(browser.text("#preview-error").contains("line 4"));
    // Previews append nothing: billing-ledger-2 was never requested.
    let (status, _) = common::http(
        &addr,
        "GET",
        "/v1/releases/billing-ledger-2",
        Some(&tokens.operator),
        "",
    );
    assert_eq!(status, 404, "a preview submits nothing");

    // 5. The auditor: no action button, a forced approve is refused, and verify passes. The
    // page is opened as Slack's and GitHub's links open it.
    browser.sign_in(&base, &tokens.auditor);
    browser.open(&format!("{base}/releases/pricing-6"));
    browser.wait_for(
        "the page of pricing-6 from its link",
        "const s = document.querySelector('#release-status [data-status]'); return s && s.dataset.status === 'rolled_back' && location.hash === '#/releases/pricing-6'",
    );
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#actions button').length",
            json!([])
        ),
        0,
        "an auditor sees no action"
    );
    let (status, answer) = common::http(
        &addr,
        "POST",
        "/v1/releases/pricing-6/approve",
        Some(&tokens.auditor),
        "",
    );
    assert_eq!(status, 403, "a forced approve by an auditor: {answer}");
    browser.open(&format!("{base}/#/audit"));
    browser.wait_for(
        "the audit query result",
        "return document.querySelector('#audit-result table')",
    );
    browser.click("#verify-run");
    browser.wait_for(
        "audit verify to pass",
        "const r = document.querySelector('#verify-result'); return r && r.dataset.ok === 'true'",
    );
    browser.screenshot("7-audit");

    println!("screenshots in {}", shots.display());
    drop(browser);
    let mut dev_child = dev_child;
    common::interrupt(dev_child.0.take().unwrap());
}
