//! Reading a service's ops port: a bare HTTP/1.0 GET and a strict parser for the
//! Prometheus/OpenMetrics text format, so a malformed exposition fails the test.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on `addr`: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    // HTTP/1.0: the server closes after the response and never chunks it.
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| invalid("no end of headers"))?;
    let status =
        head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| invalid("no status code"))?;
    Ok((status, body.to_owned()))
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → type, from the `# TYPE` lines.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the sample `name` whose labels include `labels`, summed over the
    /// matching samples; 0 when there is none (a series appears on first use).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }
}

const TYPES: [&str; 8] = ["counter", "gauge", "histogram", "summary", "unknown", "info", "stateset", "gaugehistogram"];
const SUFFIXES: [&str; 6] = ["_total", "_bucket", "_count", "_sum", "_created", "_info"];

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text format strictly: every line a `# HELP`, `# TYPE`, `# UNIT` or a
/// sample of a declared family, `# EOF` (if present) last.
pub fn parse_metrics(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    let mut ended = false;
    for (number, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
        if ended {
            return Err(at("text after # EOF"));
        }
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name, rest) = (parts.next(), parts.next(), parts.next());
            let name = name.filter(|n| is_metric_name(n)).ok_or_else(|| at("a comment names no metric"))?;
            match keyword {
                Some("TYPE") => {
                    let kind = rest.filter(|t| TYPES.contains(t)).ok_or_else(|| at("unknown type"))?;
                    if exposition.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at("a family is typed twice"));
                    }
                }
                Some("HELP") | Some("UNIT") => {}
                _ => return Err(at("unknown comment")),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|why| at(&why))?;
        let declared = exposition.types.contains_key(&sample.name)
            || SUFFIXES.iter().any(|suffix| {
                sample.name.strip_suffix(suffix).is_some_and(|family| exposition.types.contains_key(family))
            });
        if !declared {
            return Err(at("a sample of an undeclared family"));
        }
        exposition.samples.push(sample);
    }
    Ok(exposition)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("not a metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = inner.split_once("=\"").ok_or("a label without =\"")?;
            if !is_metric_name(key) || key.contains(':') {
                return Err("not a label name".into());
            }
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                match chars.next().ok_or("an unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return Err("a bad escape".into()),
                    },
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(key.to_owned(), value).is_some() {
                return Err("a label repeated".into());
            }
            inner = &after_key[end + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let mut fields = rest.strip_prefix(' ').ok_or("no space before the value")?.split(' ');
    let value = match fields.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse::<f64>().map_err(|_| "a value that is not a number")?,
    };
    match fields.next() {
        None => {}
        Some(timestamp) if timestamp.parse::<f64>().is_ok() && fields.next().is_none() => {}
        Some(_) => return Err("text after the value".into()),
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_valid_exposition_and_refuses_broken_ones() {
        let text = "# HELP a_total Calls.\n# TYPE a_total counter\na_total{code=\"OK\",m=\"x\\\"y\"} 3\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n";
        let parsed = parse_metrics(text).expect("valid");
        assert_eq!(parsed.value("a_total", &[("code", "OK")]), 3.0);
        assert_eq!(parsed.samples[0].labels["m"], "x\"y");
        for broken in [
            "a_total 1\n",
            "# TYPE a counter\na{code=\"OK\" 1\n",
            "# TYPE a counter\na{code=OK} 1\n",
            "# TYPE a counter\na one\n",
            "# TYPE a counter\n# EOF\na 1\n",
            "# TYPE a bogus\n",
        ] {
            assert!(parse_metrics(broken).is_err(), "accepted {broken:?}");
        }
    }
}
