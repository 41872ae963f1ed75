//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, which `deploy/prereqs.sh` installs), for tests of the
//! dashboard as a user sees it.
//!
//! chromedriver runs on a free loopback port; the browser gets a profile
//! directory of its own under the test's directory, which also names its
//! processes: on drop every process whose command line holds that path is
//! killed, so no browser outlives its test even when chromedriver is
//! killed first or the test panics.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::ports::free_port;
use super::process::{ChildGuard, ProcessSpec};
use super::wait::wait_for;

/// How long chromedriver and the browser may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A browser session.
pub struct Browser {
    pub client: Client,
    profile: PathBuf,
    _driver: ChildGuard,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with its profile under
    /// `dir`.
    pub async fn start(dir: &Path) -> Result<Browser, String> {
        let port = free_port();
        let driver = ProcessSpec::new("chromedriver", "chromedriver", dir)
            .arg(format!("--port={port}"))
            .spawn()
            .map_err(|e| {
                format!("cannot start chromedriver (apt-get install chromium-driver): {e}")
            })?;
        let url = format!("http://127.0.0.1:{port}");
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    // Without these, Chromium tries to reach Google's hosts
                    // at start (a closed network refuses them one by one).
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = wait_for(START_TIMEOUT, "chromedriver to open a session", || {
            let (url, caps) = (url.clone(), caps.clone());
            async move {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(Browser {
            client,
            profile,
            _driver: driver,
        })
    }

    /// The text of the element with this id, if there is one.
    pub async fn text_of(&self, id: &str) -> Option<String> {
        let element = self.client.find(Locator::Id(id)).await.ok()?;
        element.text().await.ok()
    }

    /// Saves a PNG of the page to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self.client.screenshot().await.map_err(|e| e.to_string())?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Ends the session (the browser exits).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The profile path is this test's own: it matches no other process.
        let _ = std::process::Command::new("pkill")
            .args(["-9", "-f"])
            .arg(self.profile.as_os_str())
            .status();
    }
}
