//! Reading a histogram from a replica's `/metrics` and its percentiles.

use crate::client::KvClient;

/// Cumulative bucket counts of one histogram: `(upper bound, count)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, u64)>);

impl Buckets {
    /// Parses the `{name}_bucket{le="…"} N` lines of a text exposition.
    pub fn parse(text: &str, name: &str) -> Buckets {
        let prefix = format!("{name}_bucket{{");
        let mut out = Vec::new();
        for line in text.lines().filter(|l| l.starts_with(&prefix)) {
            let Some(le_at) = line.find("le=\"") else {
                continue;
            };
            let rest = &line[le_at + 4..];
            let Some(end) = rest.find('"') else { continue };
            let le = match &rest[..end] {
                "+Inf" => f64::INFINITY,
                v => match v.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            let count = line
                .rsplit(' ')
                .next()
                .and_then(|c| c.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            out.push((le, count));
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets(out)
    }

    /// The counts observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(le, n)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0, |(_, c)| *c);
                    (le, n.saturating_sub(before))
                })
                .collect(),
        )
    }

    pub fn total(&self) -> u64 {
        self.0.last().map_or(0, |(_, n)| *n)
    }

    /// The smallest bucket bound below which fraction `q` of observations
    /// fall (an upper bound of the true percentile).
    pub fn percentile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        self.0.iter().find(|(_, n)| *n >= want).map(|(le, _)| *le)
    }
}

/// Fetches `/metrics` from a replica.
pub async fn metrics(url: &str) -> Result<String, String> {
    let mut client = KvClient::new(url).map_err(|e| e.to_string())?;
    let resp = client
        .request(hyper::Method::GET, "/metrics", &[], "")
        .await
        .map_err(|e| format!("GET {url}/metrics: {e}"))?;
    Ok(resp.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE x histogram
x_bucket{le=\"0.001\"} 10
x_bucket{le=\"0.002\"} 90
x_bucket{le=\"0.005\"} 99
x_bucket{le=\"+Inf\"} 100
x_sum 1.0
";

    #[test]
    fn percentiles_are_bucket_bounds() {
        let b = Buckets::parse(TEXT, "x");
        assert_eq!(b.total(), 100);
        assert_eq!(b.percentile(0.5), Some(0.002));
        assert_eq!(b.percentile(0.99), Some(0.005));
        assert_eq!(b.percentile(0.999), Some(f64::INFINITY));
        let earlier = Buckets(vec![(0.001, 5), (0.002, 5), (0.005, 5), (f64::INFINITY, 5)]);
        let d = b.since(&earlier);
        assert_eq!(d.total(), 95);
        assert_eq!(d.percentile(0.05), Some(0.001));
    }
}
