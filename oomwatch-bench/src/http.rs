//! A minimal HTTP/1.1 client over one keep-alive connection (std::net only), to time scrapes
//! the way a Prometheus server makes them: the same connection, one request after another.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{json::J, stats::Pct};

pub struct Conn {
    port: u16,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn connect(port: u16) -> Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            port,
            reader: BufReader::with_capacity(1 << 16, stream),
        })
    }

    /// `GET path`; the body of a 200 answer.
    pub fn get(&mut self, path: &str) -> Result<Vec<u8>> {
        let port = self.port;
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: oomwatch-bench\r\n\
             Accept: text/plain\r\n\r\n"
        )
        .context("send request")?;
        let mut line = String::new();
        self.reader.read_line(&mut line).context("read status")?;
        let status = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = value.parse::<usize>().ok();
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size_hex = line.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_hex, 16)
                    .with_context(|| format!("bad chunk size {size_hex:?}"))?;
                if size == 0 {
                    // Trailers end with an empty line.
                    loop {
                        line.clear();
                        if self.reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                read_body(&mut self.reader, size, &mut body)?;
                line.clear();
                self.reader.read_line(&mut line)?;
            }
        } else if let Some(n) = length {
            read_body(&mut self.reader, n, &mut body)?;
        } else {
            bail!("answer without Content-Length on a keep-alive connection");
        }
        if status != "200" {
            bail!("GET {path}: HTTP {status}");
        }
        Ok(body)
    }
}

/// Appends exactly `n` bytes from `r` to `body`.
///
/// Not `body.resize(n, 0)` + `read_exact`: xtask is built without optimisation, and the
/// zero-fill of a 13 MB answer in unoptimised generic code took ~42 ms per scrape, which the
/// bench then reported as the agent's latency (curl measured 16 ms for the same answer).
fn read_body(r: &mut impl Read, n: usize, body: &mut Vec<u8>) -> Result<()> {
    body.reserve_exact(n);
    let got = r.take(n as u64).read_to_end(body).context("read body")?;
    if got != n {
        bail!("connection closed after {got} of {n} body bytes");
    }
    Ok(())
}

/// One GET on a fresh connection, as text.
pub fn get_text(port: u16, path: &str) -> Result<String> {
    let body = Conn::connect(port)?.get(path)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Scrape timing: `n` GETs of `/metrics` on one keep-alive connection.
#[derive(Clone, Debug, Default)]
pub struct ScrapeStats {
    pub scrapes: usize,
    /// Labelled series of `oomwatch_oom_kills_total` present (oomwatch only).
    pub label_sets: Option<f64>,
    /// Sample lines in the answer.
    pub samples: usize,
    pub bytes: usize,
    pub latency_ms: Option<Pct>,
}

impl ScrapeStats {
    pub fn json(&self) -> J {
        J::obj(vec![
            ("scrapes", J::Num(self.scrapes as f64)),
            ("label_sets", J::opt(self.label_sets)),
            ("sample_lines", J::Num(self.samples as f64)),
            ("response_bytes", J::Num(self.bytes as f64)),
            ("latency_ms", Pct::json(&self.latency_ms)),
        ])
    }
}

/// Times `n` scrapes of `http://127.0.0.1:port/metrics` (one warm-up scrape first).
pub fn scrape_series(port: u16, n: usize) -> Result<ScrapeStats> {
    let mut conn = Conn::connect(port)?;
    let first = conn.get("/metrics")?;
    let text = String::from_utf8_lossy(&first);
    let mut times = Vec::with_capacity(n);
    let mut bytes = first.len();
    for _ in 0..n {
        let t = Instant::now();
        let body = conn.get("/metrics")?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
    }
    Ok(ScrapeStats {
        scrapes: n,
        label_sets: metric(&text, "oomwatch_metric_label_sets"),
        samples: text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
        bytes,
        latency_ms: Pct::of(&times),
    })
}

/// The value of an unlabelled sample `name` in a text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_sample_value() {
        let text = "# HELP a_total x\na_total_more 3\na_total 7\nb{x=\"1\"} 2\n";
        assert_eq!(metric(text, "a_total"), Some(7.0));
        assert_eq!(metric(text, "b"), None);
    }
}
