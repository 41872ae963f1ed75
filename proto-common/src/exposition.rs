//! The `/metrics` answer in the format the scraper asked for.
//!
//! Metrics are encoded once, as OpenMetrics text (what Prometheus asks for
//! with `Accept: application/openmetrics-text`). Anything else (`curl`,
//! `promtool check metrics`, older scrapers) gets the classic Prometheus
//! text format 0.0.4, which differs in three ways that matter here: a
//! counter's `# HELP`/`# TYPE` lines name the sample (`x_total`, not `x`),
//! there are no `# UNIT` lines, and there is no `# EOF`.

/// Content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the classic Prometheus text format.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type and body for a request whose `Accept` header is
/// `accept`, given the OpenMetrics encoding.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS, openmetrics)
    } else {
        (CLASSIC, to_classic(&openmetrics))
    }
}

/// Rewrites OpenMetrics text as classic Prometheus text.
pub fn to_classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP x_failovers Failovers.\n# TYPE x_failovers counter\n\
        x_failovers_total 2\n# HELP x_epoch Epoch.\n# TYPE x_epoch gauge\nx_epoch 3\n\
        # HELP x_lag_seconds Lag.\n# TYPE x_lag_seconds gauge\n# UNIT x_lag_seconds seconds\n\
        x_lag_seconds 0.5\n# EOF\n";

    #[test]
    fn counters_are_named_by_their_sample_and_openmetrics_only_lines_go() {
        let classic = to_classic(OM);
        assert!(
            classic.contains("# HELP x_failovers_total Failovers.\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE x_failovers_total counter\n"),
            "{classic}"
        );
        assert!(classic.contains("x_failovers_total 2\n"));
        assert!(classic.contains("# TYPE x_epoch gauge\nx_epoch 3\n"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let asked = negotiate(
            Some("application/openmetrics-text;version=1.0.0"),
            OM.into(),
        );
        assert_eq!(asked, (OPENMETRICS, OM.to_string()));
        let (kind, body) = negotiate(Some("*/*"), OM.into());
        assert_eq!(kind, CLASSIC);
        assert!(!body.contains("# EOF"));
        assert_eq!(negotiate(None, OM.into()).0, CLASSIC);
    }
}
