//! A tiny W3C WebDriver client for Debian's `chromedriver`: one driver process on a
//! free loopback port, one headless Chromium session with a fresh profile (the
//! machine has no internet, so every background fetch is turned off), and the handful
//! of commands the dashboard tests use. Dropping the `Browser` ends the session and
//! kills the driver, by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// Debian's packages put them here (`chromium`, `chromium-driver`).
pub const CHROMIUM: &str = "/usr/lib/chromium/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key W3C WebDriver gives an element reference under.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and Chromium start in well under this on the loaded 2-core machine.
const START: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("{path} is missing: install Debian's {package} (tests/install-deps.sh)")]
    Missing { path: String, package: &'static str },
    #[error("cannot start {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("chromedriver did not answer within {secs} s (log: {log})")]
    NotReady { secs: u64, log: PathBuf },
    #[error("WebDriver {method} {path}: cannot talk to chromedriver: {reason}")]
    Http {
        method: &'static str,
        path: String,
        reason: String,
    },
    #[error("WebDriver {method} {path}: {error}: {message}")]
    Command {
        method: &'static str,
        path: String,
        error: String,
        message: String,
    },
    #[error("WebDriver {what}: unexpected answer {value}")]
    Answer { what: &'static str, value: String },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An element reference of the session.
#[derive(Debug, Clone)]
pub struct Element(String);

/// One headless Chromium under one chromedriver.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose window is `width`×`height`.
    /// `dir` receives the profile and the driver's log.
    pub fn start(dir: &Path, width: u32, height: u32) -> Result<Self, BrowserError> {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(path).exists() {
                return Err(BrowserError::Missing {
                    path: path.to_owned(),
                    package,
                });
            }
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BrowserError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let port = free_port().map_err(|source| BrowserError::Spawn {
            what: "chromedriver (no free port)",
            source,
        })?;
        let log = dir.join("chromedriver.log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BrowserError::Spawn {
                what: "chromedriver",
                source,
            })?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .proxy(None)
            .build();
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent: ureq::Agent::new_with_config(config),
        };
        b.wait_ready(&log)?;
        let profile = dir.join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| BrowserError::Answer {
                what: "new session",
                value: v.to_string(),
            })?
            .to_owned();
        b.resize(width, height)?;
        Ok(b)
    }

    fn wait_ready(&self, log: &Path) -> Result<(), BrowserError> {
        let start = Instant::now();
        while start.elapsed() < START {
            if let Ok(v) = self.call("GET", "/status", None) {
                if v["ready"].as_bool() == Some(true) {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BrowserError::NotReady {
            secs: START.as_secs(),
            log: log.to_owned(),
        })
    }

    /// Sends one command; returns its `value`.
    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BrowserError> {
        let url = format!("{}{path}", self.base);
        let http = |reason: String| BrowserError::Http {
            method,
            path: path.to_owned(),
            reason,
        };
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        };
        let mut resp = resp.map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let v: Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| http(format!("HTTP {status}, body not JSON: {e}")))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(BrowserError::Command {
                method,
                path: path.to_owned(),
                error: value["error"].as_str().unwrap_or("error").to_owned(),
                message: value["message"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(value)
    }

    fn session(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for the page's load event.
    pub fn open(&self, url: &str) -> Result<(), BrowserError> {
        self.call("POST", &self.session("/url"), Some(json!({ "url": url })))
            .map(drop)
    }

    /// The page's current URL.
    pub fn url(&self) -> Result<String, BrowserError> {
        let v = self.call("GET", &self.session("/url"), None)?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Makes the page's viewport `width`×`height` CSS pixels: sets the window, then
    /// corrects by what the browser's own frame takes (headless Chromium keeps one).
    pub fn resize(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        let set = |w: i64, h: i64| {
            self.call(
                "POST",
                &self.session("/window/rect"),
                Some(json!({ "width": w, "height": h })),
            )
        };
        set(width.into(), height.into())?;
        let inner = self.script("return [window.innerWidth, window.innerHeight]", json!([]))?;
        let (iw, ih) = (inner[0].as_i64(), inner[1].as_i64());
        let (Some(iw), Some(ih)) = (iw, ih) else {
            return Err(BrowserError::Answer {
                what: "viewport size",
                value: inner.to_string(),
            });
        };
        let (w, h) = (i64::from(width), i64::from(height));
        if (iw, ih) != (w, h) {
            set(2 * w - iw, 2 * h - ih)?;
        }
        Ok(())
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Result<Option<Element>, BrowserError> {
        match self.call(
            "POST",
            &self.session("/element"),
            Some(json!({ "using": "css selector", "value": css })),
        ) {
            Ok(v) => Ok(v[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))),
            Err(BrowserError::Command { error, .. }) if error == "no such element" => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn click(&self, el: &Element) -> Result<(), BrowserError> {
        self.call(
            "POST",
            &self.session(&format!("/element/{}/click", el.0)),
            Some(json!({})),
        )
        .map(drop)
    }

    /// Finds the element matching `css` and clicks it, finding it again if the page
    /// replaced it in between (a live page redraws); false when there is none.
    pub fn click_on(&self, css: &str) -> Result<bool, BrowserError> {
        let mut tries = 0;
        loop {
            let Some(el) = self.find(css)? else {
                return Ok(false);
            };
            match self.click(&el) {
                Ok(()) => return Ok(true),
                Err(BrowserError::Command { error, .. })
                    if error == "stale element reference" && tries < 5 =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Types `text` into an input.
    pub fn type_text(&self, el: &Element, text: &str) -> Result<(), BrowserError> {
        self.call(
            "POST",
            &self.session(&format!("/element/{}/value", el.0)),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn script(&self, script: &str, args: Value) -> Result<Value, BrowserError> {
        self.call(
            "POST",
            &self.session("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let v = self.call("GET", &self.session("/screenshot"), None)?;
        let png = v
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| BrowserError::Answer {
                what: "screenshot",
                value: v.to_string().chars().take(80).collect(),
            })?;
        std::fs::write(path, png).map_err(|source| BrowserError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &self.session(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
