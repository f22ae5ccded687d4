//! The PNG chart (`<out>/bench.png`): throughput of raw, dtx and the peer
//! for every scenario (horizontal bars, log scale), and below it the
//! latency distribution of the headline scenarios (saga-2 at the highest
//! concurrency, per store) as HDR percentile curves.
//!
//! Text is drawn with plotters' `ab_glyph` backend from a TTF on disk
//! (Debian's `fonts-dejavu-core`), so nothing needs system font libraries
//! or the network.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Report, ScenarioResult, SystemResult};

/// The font every label uses, and the Debian package that ships it.
const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT_PACKAGE: &str = "fonts-dejavu-core";
const FAMILY: &str = "sans-serif";

const WIDTH: u32 = 1600;
/// Height of one scenario's row of three bars.
const ROW_HEIGHT: u32 = 42;
const LATENCY_HEIGHT: u32 = 520;
/// Room left of the bars for the scenario names.
const NAME_WIDTH: u32 = 230;
/// Height of the throughput chart's caption and legend.
const HEADER_HEIGHT: u32 = 85;

/// The three systems: name, colour, and where its result is.
type Pick = fn(&ScenarioResult) -> Option<&SystemResult>;
const SYSTEMS: [(&str, RGBColor, Pick); 3] = [
    ("raw (no coordinator)", RGBColor(150, 150, 150), |s| {
        s.raw.as_ref()
    }),
    ("dtx", RGBColor(31, 119, 180), |s| s.dtx.as_ref()),
    ("peer (dtmrs)", RGBColor(214, 39, 40), |s| s.peer.as_ref()),
];

/// The peer's index in [`SYSTEMS`].
const PEER: usize = 2;

/// Draws the chart of `report` into `path`. Fails, saying which Debian
/// package to install, when the font is missing.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    load_font()?;
    let rows = report.scenarios.len();
    if rows == 0 {
        return Err("no scenario was measured".to_owned());
    }
    let top_height =
        HEADER_HEIGHT + 90 + ROW_HEIGHT * u32::try_from(rows).unwrap_or(u32::MAX / ROW_HEIGHT / 2);
    let root = BitMapBackend::new(path, (WIDTH, top_height + LATENCY_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(top_height);
    throughput(&root, &top, &report.scenarios).map_err(|e| format!("throughput chart: {e}"))?;
    latency(&bottom, &report.scenarios).map_err(|e| format!("latency chart: {e}"))?;
    root.present()
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// Registers the TTF once per process.
fn load_font() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT_FILE).map_err(|e| {
                format!(
                    "cannot read the font {FONT_FILE} ({e}): install Debian's \
                     `{FONT_PACKAGE}` package (apt-get install {FONT_PACKAGE})"
                )
            })?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT_FILE} is not a usable TrueType font"))
        })
        .clone()
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// One system's latency line: its name, colour and (nines, ms) points.
type Curve = (&'static str, RGBColor, Vec<(f64, f64)>);

fn throughput(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    scenarios: &[ScenarioResult],
) -> DrawResult {
    let values: Vec<f64> = scenarios
        .iter()
        .flat_map(|s| SYSTEMS.iter().filter_map(move |(_, _, pick)| pick(s)))
        .map(|r| r.tps)
        .filter(|&v| v > 0.0)
        .collect();
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(0.0, f64::max);
    // Whole decades, so the log axis has readable ticks.
    let low = if low.is_finite() {
        10f64.powf(low.log10().floor())
    } else {
        1.0
    };
    let high = 10f64.powf(high.max(10.0).log10().ceil());
    let rows = scenarios.len() as f64;

    // The caption and the legend go in a header of their own: inside the
    // plot, the legend would hide the longest bars.
    let (header, body) = area.split_vertically(HEADER_HEIGHT);
    header_with_legend(
        &header,
        "Throughput by scenario: finished transactions per second (log scale)",
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .margin_left(NAME_WIDTH)
        .margin_right(50)
        .x_label_area_size(45)
        .build_cartesian_2d((low..high).log_scale(), 0f64..rows)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("transactions per second")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 17))
        .draw()?;

    // Row 0 at the top; inside a row, raw, dtx and the peer from the top.
    let band = |row: usize, k: usize| {
        let top = rows - row as f64;
        (
            top - 0.08 - 0.28 * (k as f64 + 1.0),
            top - 0.08 - 0.28 * k as f64 - 0.02,
        )
    };
    for (k, (_, colour, pick)) in SYSTEMS.iter().enumerate() {
        let bars = scenarios.iter().enumerate().filter_map(|(row, s)| {
            let r = pick(s)?;
            let (y0, y1) = band(row, k);
            (r.tps > 0.0).then(|| Rectangle::new([(low, y0), (r.tps, y1)], colour.filled()))
        });
        chart.draw_series(bars)?;
    }

    let name_style =
        TextStyle::from((FAMILY, 17).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let value_style =
        TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (row, s) in scenarios.iter().enumerate() {
        let centre = rows - row as f64 - 0.5;
        let (x, y) = chart.backend_coord(&(low, centre));
        root.draw(&Text::new(s.name.clone(), (x - 10, y), name_style.clone()))?;
        for (k, (_, _, pick)) in SYSTEMS.iter().enumerate() {
            let Some(r) = pick(s).filter(|r| r.tps > 0.0) else {
                // The peer's band says why it is empty (the reason itself
                // is in the notes and the JSON).
                if k == PEER && s.peer_absent.is_some() {
                    let (y0, y1) = band(row, k);
                    let (x, y) = chart.backend_coord(&(low, (y0 + y1) / 2.0));
                    let text = "peer: cannot run this workload (see the notes)";
                    root.draw(&Text::new(text, (x + 4, y), value_style.clone()))?;
                }
                continue;
            };
            let (y0, y1) = band(row, k);
            let (x, y) = chart.backend_coord(&(r.tps, (y0 + y1) / 2.0));
            root.draw(&Text::new(
                format!("{:.0}", r.tps),
                (x + 4, y),
                value_style.clone(),
            ))?;
        }
    }
    Ok(())
}

/// A caption, and under it one line: a colour swatch and name per system.
fn header_with_legend(area: &DrawingArea<BitMapBackend<'_>, Shift>, caption: &str) -> DrawResult {
    let centred = TextStyle::from((FAMILY, 26).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(
        caption.to_owned(),
        (WIDTH as i32 / 2, 12),
        centred,
    ))?;
    let label = TextStyle::from((FAMILY, 18).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut x = NAME_WIDTH as i32 + 15;
    let y = 62;
    for (name, colour, _) in SYSTEMS {
        area.draw(&Rectangle::new(
            [(x, y - 8), (x + 18, y + 8)],
            colour.filled(),
        ))?;
        area.draw(&Text::new(name, (x + 26, y), label.clone()))?;
        x += 60 + 11 * name.len() as i32;
    }
    Ok(())
}

/// The headline scenarios: per store, saga-2 at its highest concurrency
/// (the throughput target), else that store's first scenario.
fn headline(scenarios: &[ScenarioResult]) -> Vec<&ScenarioResult> {
    let mut stores: Vec<&str> = scenarios.iter().map(|s| s.store.as_str()).collect();
    stores.dedup();
    stores
        .into_iter()
        .filter_map(|store| {
            let of_store = scenarios.iter().filter(|s| s.store == store);
            of_store
                .clone()
                .filter(|s| s.workload == "saga-2")
                .max_by_key(|s| s.concurrency)
                .or_else(|| of_store.clone().next())
        })
        .take(2)
        .collect()
}

fn latency(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    scenarios: &[ScenarioResult],
) -> DrawResult {
    let panels = headline(scenarios);
    let areas = area.split_evenly((1, panels.len().max(1)));
    for (area, s) in areas.iter().zip(panels) {
        // x is the number of nines: 0 = p0, 1 = p90, 2 = p99, 3 = p99.9.
        let curves: Vec<Curve> = SYSTEMS
            .iter()
            .filter_map(|(name, colour, pick)| {
                let points = pick(s)?
                    .latency_curve
                    .iter()
                    .filter(|[q, ms]| *q < 100.0 && *ms > 0.0)
                    .map(|[q, ms]| (-(1.0 - q / 100.0).log10(), *ms))
                    .collect::<Vec<_>>();
                (!points.is_empty()).then_some((*name, *colour, points))
            })
            .collect();
        let all = curves.iter().flat_map(|(_, _, p)| p.iter());
        let nines = all.clone().map(|p| p.0).fold(1.0, f64::max).ceil();
        let low = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let high = all.map(|p| p.1).fold(0.0, f64::max);
        let low = if low.is_finite() {
            10f64.powf(low.log10().floor())
        } else {
            0.01
        };
        let high = 10f64.powf(high.max(low * 10.0).log10().ceil());

        let mut chart = ChartBuilder::on(area)
            .caption(format!("Latency distribution: {}", s.name), (FAMILY, 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .margin_right(50)
            .build_cartesian_2d(0f64..nines, (low..high).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(nines as usize + 1)
            .x_label_formatter(&|v| percentile_label(*v))
            .y_label_formatter(&|v| format!("{v}"))
            .x_desc("percentile")
            .y_desc("latency, ms (log scale)")
            .label_style((FAMILY, 16))
            .axis_desc_style((FAMILY, 17))
            .draw()?;
        for (name, colour, points) in curves {
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(3)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FAMILY, 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// 0 → "p0", 1 → "p90", 2 → "p99", 3 → "p99.9"; other ticks stay blank.
fn percentile_label(nines: f64) -> String {
    let k = nines.round();
    if (nines - k).abs() > 1e-6 {
        return String::new();
    }
    if k == 0.0 {
        return "p0".to_owned();
    }
    let percent = 100.0 * (1.0 - 10f64.powf(-k));
    format!(
        "p{}",
        format!("{percent:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
    )
}
