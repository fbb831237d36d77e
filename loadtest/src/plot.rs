//! The charts `compare --plot` draws, as SVG, one curve per run: latency by percentile, on
//! the scale HdrHistogram's own plots use, where each step right is one more nine (90%, 99%,
//! 99.9%...), and rates and latencies over the run's time. The tables give a few percentiles
//! and each phase's average; the curves show where a tail starts to rise, and when in a run
//! a server fell behind.

use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use plotters::prelude::*;

/// The furthest percentile drawn, in nines: 99.999%.
const MAX_NINES: f64 = 5.0;
/// Points per halving of the distance to 100%, as in HdrHistogram's percentile output.
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Line colours that stay apart on white and from each other (Tableau's ten, less the pale
/// ones), taken in turn.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One run's curve: its label and its latency histogram in microseconds.
pub struct Curve<'a> {
    pub label: &'a str,
    pub micros: &'a Histogram<u64>,
}

/// Writes the curves of `curves` that hold samples to `path`; false, and no file, when none
/// does.
pub fn latency_by_percentile(
    path: &Path,
    title: &str,
    curves: &[Curve<'_>],
) -> anyhow::Result<bool> {
    let drawn: Vec<(&str, Vec<(f64, f64)>)> = curves
        .iter()
        .filter(|curve| !curve.micros.is_empty())
        .map(|curve| (curve.label, points(curve.micros)))
        .collect();
    let axes = Axes {
        x_desc: "percentile",
        y_desc: "latency (ms)",
        x_max: MAX_NINES,
        x_labels: MAX_NINES as usize + 1,
        x_label: &|nines| percentile_label(*nines),
    };
    write(path, title, &axes, &drawn)
}

/// Writes `series`, (seconds, value) per run, to `path` as curves over the run's time; false,
/// and no file, when no run has a value above zero.
pub fn over_time(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<bool> {
    if !series
        .iter()
        .any(|(_, points)| points.iter().any(|&(_, y)| y > 0.0))
    {
        return Ok(false);
    }
    let end = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(t, _)| t))
        .fold(0.0, f64::max);
    let axes = Axes {
        x_desc: "seconds from the start of the run",
        y_desc,
        x_max: end.max(1.0),
        x_labels: 10,
        x_label: &|seconds| format!("{seconds:.0}"),
    };
    write(path, title, &axes, series)
}

/// What the horizontal and vertical axes say.
struct Axes<'a> {
    x_desc: &'a str,
    y_desc: &'a str,
    x_max: f64,
    x_labels: usize,
    x_label: &'a dyn Fn(&f64) -> String,
}

/// Draws the curves that have points to `path`, making its folder if need be; false, and no
/// file, when none has.
fn write(
    path: &Path,
    title: &str,
    axes: &Axes<'_>,
    curves: &[(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<bool> {
    let curves: Vec<_> = curves
        .iter()
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if curves.is_empty() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    draw(path, title, axes, &curves).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// (nines, milliseconds) along the histogram's percentile distribution, up to its maximum.
fn points(micros: &Histogram<u64>) -> Vec<(f64, f64)> {
    micros
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|step| {
            (
                nines(step.quantile_iterated_to()),
                millis(step.value_iterated_to()),
            )
        })
        .take_while(|&(x, _)| x <= MAX_NINES)
        .collect()
}

/// How many nines a quantile has: 0.9 is 1, 0.99 is 2. Exact 1.0 (the maximum) is drawn at the
/// right edge.
fn nines(quantile: f64) -> f64 {
    if quantile >= 1.0 {
        MAX_NINES
    } else {
        (-(1.0 - quantile).log10()).min(MAX_NINES)
    }
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The percentile at `nines` on the axis: 0 is 0%, 1 is 90%, 2 is 99%.
fn percentile_label(nines: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines.round() as usize).saturating_sub(2);
    format!("{percent:.decimals$}%")
}

/// A value on the vertical axis, with as many decimals as an axis up to `top` needs.
fn value_label(value: f64, top: f64) -> String {
    let decimals = match top {
        top if top >= 100.0 => 0,
        top if top >= 1.0 => 1,
        _ => 3,
    };
    format!("{value:.decimals$}")
}

fn draw(
    path: &Path,
    title: &str,
    axes: &Axes<'_>,
    curves: &[&(&str, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let top = curves
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(_, y)| y))
        .fold(0.0, f64::max);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        // Room for the last label on the horizontal axis, centred on the right edge.
        .margin_right(44)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..axes.x_max, 0.0..(top * 1.05).max(0.001))?;
    chart
        .configure_mesh()
        .x_labels(axes.x_labels)
        .x_label_formatter(axes.x_label)
        .y_label_formatter(&|y| value_label(*y, top))
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .draw()?;
    for (index, (label, points)) in curves.iter().enumerate() {
        let color = COLOURS[index % COLOURS.len()].stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_counts_nines() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), MAX_NINES);
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert_eq!(value_label(90_000.0, 95_000.0), "90000");
        assert_eq!(value_label(2.5, 8.0), "2.5");
        assert_eq!(value_label(0.25, 0.5), "0.250");
    }

    #[test]
    fn a_curve_rises_to_the_maximum_and_empty_runs_are_left_out() {
        let mut fast = Histogram::<u64>::new(3).unwrap();
        let mut slow = Histogram::<u64>::new(3).unwrap();
        for i in 1..=10_000 {
            fast.record(100 + i % 100).unwrap();
            slow.record(1_000 + i).unwrap();
        }
        let points = points(&slow);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        let &(x, ms) = points.last().unwrap();
        assert_eq!(x, MAX_NINES);
        assert!((ms - 11.0).abs() < 0.02, "{ms}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.svg");
        let empty = Histogram::<u64>::new(3).unwrap();
        let curves = [
            Curve {
                label: "fast",
                micros: &fast,
            },
            Curve {
                label: "idle",
                micros: &empty,
            },
            Curve {
                label: "slow",
                micros: &slow,
            },
        ];
        assert!(latency_by_percentile(&path, "delivery", &curves).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in ["fast", "slow", "99.9%", "latency (ms)"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(!svg.contains("idle"));

        let series = [("steady", vec![(1.0, 0.0), (2.0, 5.0)]), ("none", vec![])];
        let timeline = dir.path().join("timeline.svg");
        assert!(over_time(&timeline, "delivered", "messages/s", &series).unwrap());
        let svg = std::fs::read_to_string(&timeline).unwrap();
        assert!(svg.contains("steady") && !svg.contains(">none<"), "{svg}");
        let flat = [("idle", vec![(1.0, 0.0)])];
        assert!(!over_time(&dir.path().join("flat.svg"), "logins", "logins/s", &flat).unwrap());

        let nothing = dir.path().join("nothing.svg");
        let curves = [Curve {
            label: "idle",
            micros: &empty,
        }];
        assert!(!latency_by_percentile(&nothing, "login", &curves).unwrap());
        assert!(!nothing.exists());
    }
}
