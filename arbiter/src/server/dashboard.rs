//! `GET /`: the live dashboard — one self-contained HTML page (inline CSS
//! and script, no external assets, no build step) that polls
//! `GET /v1/status` every second and shows the epoch, the active, every
//! replica, the mode flags and the recent decisions with their reasons.
//!
//! The page lives in `dashboard.html` next to this file so it can be edited
//! as HTML; it is compiled into the binary.

/// The page, served as is.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_polls_status() {
        assert!(DASHBOARD_HTML.starts_with("<!doctype html>"));
        assert!(DASHBOARD_HTML.contains("/v1/status"));
        for external in ["<script src", "<link", "http://", "https://"] {
            assert!(
                !DASHBOARD_HTML.contains(external),
                "the dashboard must not load {external:?} assets"
            );
        }
    }
}
