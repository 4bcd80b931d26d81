//! A real browser for tests: Debian's headless Chromium driven over WebDriver
//! (`chromedriver`, HTTP/JSON spoken with ureq; no npm, no Selenium), and a TCP
//! forward from this namespace into the lab's core namespace, where the router's API
//! listens on loopback, so the browser opens the dashboard as a user would.
//!
//! - [`webdriver`]: `Browser` (one chromedriver, one session, a fresh profile) and its
//!   few commands: open a URL, find, click, type, run a script, screenshot, resize;
//! - [`forward`]: `Forward`, a loopback port here that reaches an address inside a
//!   network namespace.

pub mod forward;
pub mod webdriver;

pub use forward::Forward;
pub use webdriver::{Browser, BrowserError, Element};
