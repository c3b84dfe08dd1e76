//! The dashboard in a real browser: headless Chromium (Debian package
//! `chromium`, which `.ci/run` installs), driven through the DevTools
//! protocol over a websocket, loads the dashboard of a ledger a writer is
//! appending to, sees a new attempt appear without a reload, votes with
//! the token and sees the decision, moves the tick slider, zooms the chart
//! with a mouse drag, picks a metric column, and starts a replay that
//! opens the replay view. A
//! screenshot of each page is saved under the test's output folder
//! (printed). Every wait is bounded, and the browser's whole process group
//! is killed when the test ends, however it ends.

mod common;

use autoresearch_core::OutcomeStatus;
use base64::Engine;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The longest any one wait of the test may take.
const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium in a process group of its own, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    devtools_port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the process group the
        // browser was started in (process_group(0)): only its processes.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn chromium_binary() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("no chromium on PATH: install the Debian package `chromium` (.ci/run does)");
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium_binary())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--window-size=1280,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("starting chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        let mut browser = Browser {
            child,
            _profile: profile,
            devtools_port: 0,
        };
        let addr = rx
            .recv_timeout(WAIT)
            .expect("chromium printed its DevTools address within 20 s");
        let port = addr
            .split('/')
            .next()
            .and_then(|hp| hp.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("a port in the DevTools address");
        browser.devtools_port = port;
        browser
    }

    /// The websocket URL of the browser's first page.
    fn page_ws_url(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let body = http_get("127.0.0.1", self.devtools_port, "/json/list");
            let targets: Value = serde_json::from_str(&body).unwrap_or(json!([]));
            if let Some(url) = targets
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                return url.to_string();
            }
            assert!(Instant::now() < deadline, "no page target: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The body of a plain HTTP GET (the DevTools JSON endpoint, which keeps
/// the connection open: the body is read to its Content-Length); empty
/// when the browser is not answering yet.
fn http_get(host: &str, port: u16, path: &str) -> String {
    let get = || -> std::io::Result<String> {
        let mut s = TcpStream::connect((host, port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(usize::MAX);
                if body.len() >= len {
                    return Ok(body.to_string());
                }
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        Ok(text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    };
    get().unwrap_or_default()
}

/// A DevTools protocol session with one page.
struct Page {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    fn connect(url: &str) -> Page {
        let (ws, _) = tungstenite::connect(url).expect("connecting to the page's DevTools socket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(WAIT)).unwrap();
        }
        Page { ws, next_id: 1 }
    }

    /// Calls `method`: its result, or the error the browser answered with
    /// (events in between are skipped).
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "{method}: no answer within 20 s");
            let m = self.ws.read().expect("reading from DevTools");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// Calls `method` and returns its result; an error fails the test.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Evaluates `js` in the page (awaiting a promise): its value, or the
    /// exception or error it met.
    fn try_eval(&mut self, js: &str) -> Result<Value, Value> {
        let r = self.try_call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        )?;
        match r.get("exceptionDetails") {
            Some(e) => Err(e.clone()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Evaluates `js` in the page; an exception fails the test.
    fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    /// Waits until `js` is true in the page. An exception (an element not
    /// there yet, a page still loading) counts as not yet.
    fn wait_for(&mut self, what: &str, js: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.try_eval(&format!("!!({js})")) {
                Ok(Value::Bool(true)) => return,
                Ok(v) => v,
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "waited 20 s for {what}: {js} (last: {last})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Navigates to `url` and waits for the new document to have loaded
    /// (a mark left on the old one tells them apart).
    fn goto(&mut self, url: &str) {
        let _ = self.try_eval("window.leftBehind = true");
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(
            &format!("{url} to load"),
            "window.leftBehind === undefined && document.readyState === 'complete' \
             && !!document.querySelector('main')",
        );
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(path, png).unwrap();
    }
}

#[test]
fn the_dashboard_updates_live_takes_a_vote_and_travels_in_time_in_a_real_browser() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    println!("screenshots: {}", out.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ledger = Ledger::new();
    let mut w = rt.block_on(async {
        let mut w = Writer::start(&ledger, "demo", 10.0).await;
        w.attempt(Some(9.0), OutcomeStatus::Keep, "better").await;
        w.attempt(Some(9.5), OutcomeStatus::Discard, "worse").await;
        w.attempt(None, OutcomeStatus::Crash, "evaluator exited 1")
            .await;
        w.pending(8.9).await;
        w.in_flight().await;
        w
    });
    // The dashboard reads through a read-only open, as `serve` does; the
    // writer (standing in for the loop) and the actions use another.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = rt.block_on(async {
        autoresearch_web::router(
            ledger.read_only(),
            ledger.registry.clone(),
            with_actions(ledger.storage.clone(), ledger.registry.clone()),
        )
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(autoresearch_web::serve(listener, app, async {
        let _ = stopped.await;
    }));

    let browser = Browser::launch();
    let mut page = Page::connect(&browser.page_ws_url());
    let base = format!("http://{addr}");

    // The experiments list; the token arrives in the fragment and is kept.
    page.goto(&format!("{base}/#token={TOKEN}"));
    page.wait_for(
        "the experiment's row",
        "document.querySelector('tr[data-world=\"autoresearch:demo\"]')",
    );
    assert_eq!(
        page.eval("location.hash"),
        json!(""),
        "the token left the URL"
    );
    page.screenshot(&out.join("1-experiments.png"));

    // The experiment page, live.
    page.goto(&format!("{base}/worlds/autoresearch%3Ademo"));
    page.wait_for(
        "the attempts table",
        "document.getElementById('count-attempts').textContent === '6'",
    );
    page.eval("window.notReloaded = true");
    page.screenshot(&out.join("2-experiment.png"));

    // A new attempt appears without a reload.
    let new_run = rt.block_on(w.attempt(Some(8.5), OutcomeStatus::Keep, "a new best"));
    page.wait_for(
        "the new attempt to appear",
        &format!("document.querySelector('#attempts tr[data-run=\"{new_run}\"]')"),
    );
    assert_eq!(page.eval("window.notReloaded"), json!(true), "no reload");
    assert_eq!(
        page.eval("document.getElementById('count-attempts').textContent"),
        json!("7")
    );
    page.screenshot(&out.join("3-new-attempt.png"));

    // Vote keep on the pending run with the token; the loop decides on it.
    page.eval(
        "document.querySelector('#pending tr[data-run=\"run-0005\"] button[data-verdict=\"keep\"]').click()",
    );
    page.wait_for(
        "the vote's receipt",
        "document.getElementById('action-result').textContent.includes('voted keep on run run-0005')",
    );
    let deadline = Instant::now() + WAIT;
    while rt.block_on(w.decide_votes()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the vote never reached the ledger"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    page.wait_for(
        "the decision to show",
        "document.querySelector('#attempts tr[data-run=\"run-0005\"] .st').textContent === 'keep' \
         && !document.getElementById('pending')",
    );
    assert_eq!(page.eval("window.notReloaded"), json!(true), "no reload");
    page.screenshot(&out.join("4-after-vote.png"));

    // The run page shows the decision and the vote.
    page.goto(&format!("{base}/worlds/autoresearch%3Ademo/runs/run-0005"));
    page.wait_for(
        "the run's decision",
        "document.getElementById('run-class').textContent === 'keep' \
         && document.getElementById('votes').textContent.includes('dashboard')",
    );
    page.screenshot(&out.join("5-run.png"));

    // The tick slider: back to tick 3 (the baseline and one keep).
    page.goto(&format!("{base}/worlds/autoresearch%3Ademo"));
    page.eval(
        "(() => { const s = document.getElementById('tick-slider'); s.value = '3'; \
         s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); })()",
    );
    page.wait_for(
        "the page at tick 3",
        "location.search === '?tick=3' && document.readyState === 'complete' \
         && document.getElementById('past-badge') \
         && document.getElementById('count-attempts').textContent === '2'",
    );
    page.screenshot(&out.join("6-tick-3.png"));

    // Zoom: a real mouse drag across the chart (DevTools input events)
    // shows a window of attempts, drawn again by the server.
    page.goto(&format!("{base}/worlds/autoresearch%3Ademo"));
    page.wait_for("the chart", "document.querySelector('#chart svg.chart')");
    page.eval("window.beforeZoom = true");
    let rect = page.eval(
        "(() => { const r = document.querySelector('#chart svg.chart').getBoundingClientRect(); \
         return [r.left, r.top, r.width, r.height]; })()",
    );
    let [left, top, width, height] = [0, 1, 2, 3].map(|i| rect[i].as_f64().unwrap());
    // From a third of the plot to its right edge: the later attempts.
    let (x0, x1, y) = (
        left + width * 0.40,
        left + width * 0.995,
        top + height / 2.0,
    );
    for (kind, x) in [
        ("mousePressed", x0),
        ("mouseMoved", x1),
        ("mouseReleased", x1),
    ] {
        page.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
        );
    }
    page.wait_for(
        "the zoomed chart",
        "location.search.includes('from=') && document.querySelector('#chart svg.chart').dataset.from !== '1' \
         && !document.getElementById('zoom-reset').hidden",
    );
    let from: u64 = page
        .eval("document.querySelector('#chart svg.chart').dataset.from")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=7).contains(&from), "zoomed from attempt {from}");
    assert_eq!(
        page.eval("window.beforeZoom"),
        json!(true),
        "zoom reloaded the page"
    );
    page.screenshot(&out.join("7-zoomed.png"));
    page.eval("document.getElementById('zoom-reset').click()");
    page.wait_for(
        "the whole chart again",
        "!location.search.includes('from=') && document.querySelector('#chart svg.chart').dataset.from === '1'",
    );

    // The column chooser: tick `loss`, show; the table gains its column.
    page.eval(
        "(() => { document.getElementById('column-chooser').open = true; \
         document.querySelector('input.col-choice[value=\"loss\"]').click(); \
         document.querySelector('#filters button[type=submit]').click(); })()",
    );
    page.wait_for(
        "the loss column",
        "location.search.includes('cols=loss') && document.readyState === 'complete' \
         && document.querySelector('#attempts th.extra') \
         && document.querySelector('#attempts th.extra').textContent === 'loss'",
    );
    page.screenshot(&out.join("8-columns.png"));

    // Start a replay under the opposite direction; the replay view opens
    // with the changed decisions marked.
    page.goto(&format!("{base}/worlds/autoresearch%3Ademo"));
    page.eval(
        "(() => { document.getElementById('replay-comparator').value = 'scalar:score:max'; \
         document.querySelector('#start-replay button[type=submit]').click(); })()",
    );
    page.wait_for(
        "the replay view",
        "location.pathname === '/worlds/demo-replay-scalar/replay' && document.readyState === 'complete' \
         && document.getElementById('compared') \
         && Number(document.getElementById('changed-count').textContent) > 0 \
         && document.querySelectorAll('#compared tr.changed').length > 0",
    );
    page.screenshot(&out.join("9-replay.png"));

    for name in [
        "1-experiments.png",
        "2-experiment.png",
        "3-new-attempt.png",
        "4-after-vote.png",
        "5-run.png",
        "6-tick-3.png",
        "7-zoomed.png",
        "8-columns.png",
        "9-replay.png",
    ] {
        let len = std::fs::metadata(out.join(name)).unwrap().len();
        assert!(len > 5_000, "{name} is {len} bytes");
    }
    drop(page);
    drop(browser);
    let _ = stop.send(());
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops within 10 s")
            .unwrap()
            .unwrap();
    });
}
