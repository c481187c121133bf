//! Building [`MetricFamily`] values by hand, as `sink::metrics` does.
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// A family; empty families are dropped by the caller before encoding.
pub(crate) fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    metrics: Vec<Metric>,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// A gauge family with one unlabelled sample, or no family at all when the value is unknown.
pub(crate) fn single_gauge(name: &str, help: &str, value: Option<f64>) -> Option<MetricFamily> {
    value.map(|v| family(name, help, MetricType::GAUGE, vec![gauge(&[], v)]))
}

/// A sample's labels; `labels` must be sorted by name.
pub(crate) fn labels(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut lp = LabelPair::default();
            lp.set_name((*name).to_owned());
            lp.set_value((*value).to_owned());
            lp
        })
        .collect()
}

pub(crate) fn counter(l: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels(l));
    m.set_counter(c);
    m
}

pub(crate) fn gauge(l: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels(l));
    m.set_gauge(g);
    m
}

/// `u64` → `f64` for a sample value (exact below 2^53, which every real value is).
pub(crate) fn f(v: u64) -> f64 {
    v as f64
}
