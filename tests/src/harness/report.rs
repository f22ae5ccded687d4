//! The harness's report: `report.json` for machines (every scenario's
//! [`ScenarioReport`]) and `report.html` for people, with per scenario the
//! seed, the faults, transactions per mode and outcome, violations, time to
//! quiescence, availability per fault kind against its target, and a
//! timeline of faults against order outcomes and the rate of completed
//! orders (inline SVG, so the page needs nothing from the network).

use std::fmt::Write as _;
use std::path::Path;

use super::availability::{self, FULL_RATE, FULL_RATE_WINDOW_MS, RECOVERY_GRACE_MS};
use super::checker::OrderStatus;
use super::scenario::ScenarioReport;

/// Writes `report.json` and `report.html` into `dir` (created if missing).
pub fn write(dir: &Path, reports: &[ScenarioReport]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(reports).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.html"), html(reports))
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(reports: &[ScenarioReport]) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>dtx fault-injection report</title>\
         <style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}\
         td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}.ok{color:#060}.bad{color:#b00}\
         .finding{color:#a60}code{background:#f4f4f4}</style></head><body>\
         <h1>dtx fault-injection report</h1>",
    );
    let _ = write!(
        page,
        "<table><tr><th>scenario</th><th>seed</th><th>verdict</th><th>faults</th><th>orders</th>\
         <th>violations</th><th>findings</th><th>quiescence</th><th>availability</th><th>took</th></tr>"
    );
    for r in reports {
        let verdict = if r.passed() {
            "<span class=ok>passed</span>"
        } else {
            "<span class=bad>FAILED</span>"
        };
        let _ = write!(
            page,
            "<tr><td><a href=\"#{n}\">{n}</a></td><td>{}</td><td>{verdict}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} s</td></tr>",
            r.seed,
            r.faults.len(),
            r.attempts.len(),
            r.violations.len(),
            r.findings.len(),
            r.quiescence_ms
                .map_or("not within the bound".to_owned(), |ms| format!(
                    "{:.1} s",
                    ms as f64 / 1000.0
                )),
            availability_verdict(r),
            r.took_ms as f64 / 1000.0,
            n = esc(&r.scenario),
        );
    }
    page.push_str("</table>");
    for r in reports {
        scenario_section(&mut page, r);
    }
    page.push_str("</body></html>\n");
    page
}

fn scenario_section(page: &mut String, r: &ScenarioReport) {
    let _ = write!(
        page,
        "<h2 id=\"{n}\">{n}</h2><p>Replay: <code>dtx-harness --scenarios {n} --seed {}</code></p>",
        r.seed,
        n = esc(&r.scenario)
    );
    page.push_str("<h3>Faults</h3><table><tr><th>at</th><th>kind</th><th>target</th><th>held</th><th>note</th></tr>");
    for f in &r.faults {
        let _ = write!(
            page,
            "<tr><td>{:.1} s</td><td>{:?}</td><td>{}</td><td>{:.1} s</td><td>{}</td></tr>",
            f.began_ms as f64 / 1000.0,
            f.planned.kind,
            f.planned.target,
            (f.ended_ms - f.began_ms) as f64 / 1000.0,
            esc(f.error.as_deref().or(f.note.as_deref()).unwrap_or("")),
        );
    }
    page.push_str("</table><h3>Transactions by mode (coordinators' log)</h3>");
    counts_table(page, &r.transactions_by_mode);
    page.push_str("<h3>What the clients were told</h3>");
    counts_table(page, &r.attempts_by_mode);
    for (title, list, class) in [
        ("Violations", &r.violations, "bad"),
        ("Findings", &r.findings, "finding"),
    ] {
        let _ = write!(page, "<h3>{title}: {}</h3>", list.len());
        if !list.is_empty() {
            page.push_str("<table><tr><th>kind</th><th>gid</th><th>detail</th></tr>");
            for v in list {
                let _ = write!(
                    page,
                    "<tr class={class}><td>{:?}</td><td>{}</td><td>{}</td></tr>",
                    v.kind,
                    esc(v.gid.as_deref().unwrap_or("")),
                    esc(&v.detail)
                );
            }
            page.push_str("</table>");
        }
    }
    availability_table(page, r);
    page.push_str("<h3>Timeline</h3>");
    timeline(page, r);
}

/// The summary's word on availability: whether every kind with a target
/// met it.
fn availability_verdict(r: &ScenarioReport) -> String {
    let judged: Vec<_> = r
        .availability
        .kinds
        .iter()
        .filter_map(|k| k.met().map(|met| (k.kind, met)))
        .collect();
    let missed: Vec<String> = judged
        .iter()
        .filter(|(_, met)| !met)
        .map(|(kind, _)| format!("{kind:?}"))
        .collect();
    match (judged.is_empty(), missed.is_empty()) {
        (true, _) => "no target".into(),
        (false, true) => "<span class=ok>met</span>".into(),
        (false, false) => format!("<span class=bad>missed: {}</span>", missed.join(", ")),
    }
}

/// Per fault kind: its figures against the healthy rate and its target.
fn availability_table(page: &mut String, r: &ScenarioReport) {
    let a = &r.availability;
    let _ = write!(
        page,
        "<h3>Availability</h3><p>Healthy rate: {:.1} completed orders/s (from {:.1} s to the \
         first fault at {:.1} s). Per kind: the rate during its strikes together (and the lowest \
         single strike's ratio), the longest time without a completed order overlapping a fault or the {:.0} s after it, and \
         the slowest return to {:.0}% of the healthy rate over {:.0} s.</p>",
        a.healthy_rate,
        a.healthy_from_ms as f64 / 1000.0,
        a.healthy_to_ms as f64 / 1000.0,
        RECOVERY_GRACE_MS as f64 / 1000.0,
        FULL_RATE * 100.0,
        FULL_RATE_WINDOW_MS as f64 / 1000.0,
    );
    if a.kinds.is_empty() {
        return;
    }
    page.push_str(
        "<table><tr><th>kind</th><th>strikes</th><th>healthy rate</th><th>rate during</th>\
         <th>ratio</th><th>worst strike</th><th>longest gap</th><th>time to full rate</th><th>target</th><th>met?</th></tr>",
    );
    for k in &a.kinds {
        let met = match k.met() {
            None => "—".to_owned(),
            Some(true) => "<span class=ok>yes</span>".to_owned(),
            Some(false) => format!("<span class=bad>no: {}</span>", esc(&k.misses.join("; "))),
        };
        let _ = write!(
            page,
            "<tr><td>{:?}</td><td>{}</td><td>{:.1}/s</td><td>{:.1}/s</td><td>{}</td><td>{}</td><td>{:.1} s</td>\
             <td>{}</td><td>{}</td><td>{met}</td></tr>",
            k.kind,
            k.strikes,
            k.healthy_rate,
            k.rate_during,
            k.ratio
                .map_or("—".to_owned(), |r| format!("{:.0}%", r * 100.0)),
            k.worst_strike_ratio
                .map_or("—".to_owned(), |r| format!("{:.0}%", r * 100.0)),
            k.longest_gap_ms as f64 / 1000.0,
            k.to_full_rate_ms
                .map_or("not within the run".to_owned(), |ms| format!(
                    "{:.1} s",
                    ms as f64 / 1000.0
                )),
            esc(&k
                .target
                .map_or("reported only".to_owned(), |t| t.describe())),
        );
    }
    page.push_str("</table>");
}

fn counts_table(
    page: &mut String,
    counts: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>>,
) {
    let columns: std::collections::BTreeSet<&String> =
        counts.values().flat_map(|c| c.keys()).collect();
    page.push_str("<table><tr><th>mode</th>");
    for c in &columns {
        let _ = write!(page, "<th>{}</th>", esc(c));
    }
    page.push_str("</tr>");
    for (mode, row) in counts {
        let _ = write!(page, "<tr><td>{}</td>", esc(mode));
        for c in &columns {
            let _ = write!(page, "<td>{}</td>", row.get(*c).copied().unwrap_or(0));
        }
        page.push_str("</tr>");
    }
    page.push_str("</table>");
}

/// Faults as bars over time and as bands across the whole chart, each order
/// attempt as a dot in its mode's row, coloured by what the client was told,
/// and below them the completed orders per second against the healthy rate.
fn timeline(page: &mut String, r: &ScenarioReport) {
    const WIDTH: f64 = 900.0;
    const LEFT: f64 = 60.0;
    const RATE_HEIGHT: f64 = 90.0;
    let modes: Vec<&String> = r.attempts_by_mode.keys().collect();
    let end_ms = r
        .attempts
        .iter()
        .map(|a| a.at_ms)
        .chain(r.faults.iter().map(|f| f.ended_ms))
        .chain([r.availability.workload_ms])
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |ms: u64| LEFT + (ms as f64 / end_ms) * (WIDTH - LEFT - 10.0);
    let fault_rows = r.faults.len() as f64;
    let top = 20.0 + fault_rows * 14.0;
    let rate_top = top + modes.len() as f64 * 20.0 + 10.0;
    let rate_bottom = rate_top + RATE_HEIGHT;
    let height = rate_bottom + 20.0;
    let _ = write!(
        page,
        "<svg width=\"{WIDTH}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">"
    );
    for f in &r.faults {
        let _ = write!(
            page,
            "<rect x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{rate_bottom:.1}\" fill=\"#c33\" opacity=\".08\"/>",
            x(f.began_ms),
            (x(f.ended_ms) - x(f.began_ms)).max(2.0),
        );
    }
    for (i, f) in r.faults.iter().enumerate() {
        let y = 10.0 + i as f64 * 14.0;
        let _ = write!(
            page,
            "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"10\" fill=\"#c33\" opacity=\".6\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{:?} {}</text>",
            x(f.began_ms),
            (x(f.ended_ms) - x(f.began_ms)).max(2.0),
            x(f.ended_ms) + 4.0,
            y + 9.0,
            f.planned.kind,
            f.planned.target
        );
    }
    for (row, mode) in modes.iter().enumerate() {
        let y = top + row as f64 * 20.0 + 10.0;
        let _ = write!(
            page,
            "<text x=\"4\" y=\"{:.1}\">{}</text>",
            y + 4.0,
            esc(mode)
        );
        for a in r
            .attempts
            .iter()
            .filter(|a| a.mode.as_str() == mode.as_str())
        {
            let colour = match &a.told {
                super::workload::Told::Settled(OrderStatus::Confirmed) => "#2a2",
                super::workload::Told::Settled(_) => "#e90",
                super::workload::Told::NoAnswer => "#c00",
                _ => "#888",
            };
            let _ = write!(
                page,
                "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"2.5\" fill=\"{colour}\"/>",
                x(a.at_ms)
            );
        }
    }
    rate_chart(page, r, &x, rate_top, RATE_HEIGHT);
    let _ = write!(
        page,
        "<text x=\"{LEFT}\" y=\"{:.1}\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\">{:.0} s</text></svg>\
         <p>Dots: green confirmed, orange cancelled, red no answer, grey other. Red bands: faults. \
         Line: orders completed (confirmed or cancelled) per second; dashed: the healthy rate.</p>",
        height - 4.0,
        WIDTH - 40.0,
        height - 4.0,
        end_ms / 1000.0
    );
}

/// Completed orders per second as a polyline (one point per second of the
/// workload), the healthy rate as a dashed line, on a panel at `top`.
fn rate_chart(
    page: &mut String,
    r: &ScenarioReport,
    x: &dyn Fn(u64) -> f64,
    top: f64,
    height: f64,
) {
    let a = &r.availability;
    let seconds = availability::per_second(&r.attempts, a.workload_ms);
    let peak = seconds
        .iter()
        .map(|&n| n as f64)
        .fold(a.healthy_rate, f64::max)
        .max(1.0)
        * 1.1;
    let y = |rate: f64| top + height - rate / peak * height;
    let points: Vec<String> = seconds
        .iter()
        .enumerate()
        .map(|(i, &n)| format!("{:.1},{:.1}", x(i as u64 * 1000 + 500), y(n as f64)))
        .collect();
    let _ = write!(
        page,
        "<line x1=\"{x0:.1}\" y1=\"{bottom:.1}\" x2=\"{x1:.1}\" y2=\"{bottom:.1}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"{:.1}\">{peak:.0}/s</text><text x=\"4\" y=\"{:.1}\">completed</text>\
         <line x1=\"{:.1}\" y1=\"{hy:.1}\" x2=\"{x1:.1}\" y2=\"{hy:.1}\" stroke=\"#06c\" stroke-dasharray=\"4 3\"/>\
         <polyline points=\"{}\" fill=\"none\" stroke=\"#2a2\" stroke-width=\"1.5\"/>",
        top + 8.0,
        top + height / 2.0,
        x(a.healthy_from_ms),
        points.join(" "),
        x0 = x(0),
        x1 = x(a.workload_ms),
        bottom = top + height,
        hy = y(a.healthy_rate),
    );
}

#[cfg(test)]
mod tests {
    use dtx_protocol::Mode;

    use super::*;
    use crate::harness::MODES;
    use crate::harness::availability::Target;
    use crate::harness::cluster::Node;
    use crate::harness::nemesis::{AppliedFault, FaultKind, PlannedFault};
    use crate::harness::scenario::Settings;
    use crate::harness::workload::{Attempt, Told};

    /// Ten seconds of a run: an order confirmed every 100 ms but while c1
    /// was down from 4 s to 6 s.
    fn report() -> ScenarioReport {
        let attempts: Vec<Attempt> = (0..10_000)
            .step_by(100)
            .filter(|t| !(4000..6000).contains(t))
            .map(|at_ms| Attempt {
                at_ms,
                mode: Mode::Saga,
                order: None,
                told: Told::Settled(OrderStatus::Confirmed),
            })
            .collect();
        let faults = vec![AppliedFault {
            planned: PlannedFault {
                at_ms: 4000,
                kind: FaultKind::KillCoordinator,
                target: Node::Coordinator1,
                hold_ms: 2000,
            },
            began_ms: 4000,
            ended_ms: 6000,
            failover_ms: None,
            note: None,
            error: None,
        }];
        ScenarioReport {
            scenario: "kill-coordinator".into(),
            seed: 1,
            settings: Settings::ci(MODES),
            availability: availability::measure(&attempts, &faults, 10_000, Target::for_kind),
            faults,
            attempts_by_mode: Default::default(),
            confirmed_after_faults: Default::default(),
            transactions_by_mode: Default::default(),
            violations: vec![],
            findings: vec![],
            quiescence_ms: Some(1),
            evidence: Default::default(),
            logs: Default::default(),
            attempts,
            took_ms: 1,
        }
    }

    #[test]
    fn the_page_has_a_row_per_fault_kind_with_its_target_and_verdict() {
        let page = html(&[report()]);
        assert!(
            page.contains(
                "<tr><td>KillCoordinator</td><td>1</td><td>10.0/s</td><td>0.0/s</td><td>0%</td>\
                 <td>0%</td><td>2.1 s</td><td>0.0 s</td>"
            ),
            "{page}"
        );
        assert!(page.contains("<span class=bad>no: 0% of the healthy rate"));
        assert!(page.contains("<td><span class=bad>missed: KillCoordinator</span></td>"));
    }

    #[test]
    fn the_timeline_draws_one_rate_point_per_second_over_the_fault_bands() {
        let page = html(&[report()]);
        let points = page
            .split("<polyline points=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a rate line");
        assert_eq!(points.split(' ').count(), 10, "{points}");
        assert!(page.contains("opacity=\".08\""), "no fault band");
    }
}
