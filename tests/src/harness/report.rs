//! The harness's report: `report.json` for machines (every scenario's
//! [`ScenarioReport`]) and `report.html` for people, with per scenario the
//! seed, the faults, transactions per mode and outcome, violations, time to
//! quiescence, and a timeline of faults against order outcomes (inline SVG,
//! so the page needs nothing from the network).

use std::fmt::Write as _;
use std::path::Path;

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
         <th>violations</th><th>findings</th><th>quiescence</th><th>took</th></tr>"
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
             <td>{}</td><td>{}</td><td>{}</td><td>{:.0} s</td></tr>",
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
    page.push_str("<h3>Timeline</h3>");
    timeline(page, r);
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

/// Faults as bars over time, each order attempt as a dot in its mode's
/// row, coloured by what the client was told.
fn timeline(page: &mut String, r: &ScenarioReport) {
    const WIDTH: f64 = 900.0;
    const LEFT: f64 = 60.0;
    let modes: Vec<&String> = r.attempts_by_mode.keys().collect();
    let end_ms = r
        .attempts
        .iter()
        .map(|a| a.at_ms)
        .chain(r.faults.iter().map(|f| f.ended_ms))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |ms: u64| LEFT + (ms as f64 / end_ms) * (WIDTH - LEFT - 10.0);
    let fault_rows = r.faults.len() as f64;
    let height = 20.0 + fault_rows * 14.0 + modes.len() as f64 * 20.0 + 20.0;
    let _ = write!(
        page,
        "<svg width=\"{WIDTH}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">"
    );
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
    let top = 20.0 + fault_rows * 14.0;
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
    let _ = write!(
        page,
        "<text x=\"{LEFT}\" y=\"{:.1}\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\">{:.0} s</text></svg>\
         <p>Dots: green confirmed, orange cancelled, red no answer, grey other.</p>",
        height - 4.0,
        WIDTH - 40.0,
        height - 4.0,
        end_ms / 1000.0
    );
}
