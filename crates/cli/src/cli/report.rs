//! `report`: each set's objectives, backups, drills, verification and storage as one
//! self-contained HTML page (inline CSS and SVG charts; no script, nothing fetched, a
//! Content-Security-Policy that forbids fetching) or as JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use clap::Args;
use plotters::prelude::*;
use strata::audit::{self, Drill};
use strata::report::{Report, SetReport};

use super::exit;
use super::output;
use super::watch;
use super::Global;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Sets to report (default: every set of the config file, else every lineage).
    sets: Vec<String>,
    /// Write the page to FILE (replaced whole, mode 0644: it holds no secret); `-`:
    /// standard output.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub fn run(global: &Global, args: ReportArgs) -> anyhow::Result<i32> {
    if args.html.is_none() && !global.json {
        return Err(exit::usage("report: give --html FILE, or --json"));
    }
    let to_stdout = args.html.as_deref() == Some(Path::new("-"));
    if to_stdout && global.json {
        return Err(exit::usage(
            "report: --html - and --json both write to standard output; give --html a file",
        ));
    }
    let repo = global.open()?;
    let all = repo.snapshots().list()?;
    let picks = watch::newest(global, all.clone(), &args.sets)?;
    let records = audit::load(&repo)?;
    let lifecycle = repo
        .lifecycle_dangers(Some(std::time::Duration::from_secs(86_400)))
        .unwrap_or_default()
        .unwrap_or_default();
    let classes = watch::data_classes(repo.config().data_storage_class.as_deref(), &lifecycle);
    let judged = watch::judge(global, picks, &all, &records, &classes, None)?;
    // The runs are extra: a metrics file that cannot be read leaves them out, said.
    let metrics = global.metrics().and_then(|m| {
        m.read()
            .inspect_err(|e| eprintln!("warning: report without the runs: {e}"))
            .ok()
    });
    let coverage = audit::repository_coverage(&repo, &records, strata::timespec::now())?;
    let report = strata::report::build(
        &repo,
        strata::report::Inputs {
            rows: judged.rows,
            objectives: &judged.objectives,
            snapshots: &all,
            drills: &judged.drills,
            metrics: metrics.as_ref(),
            prices: &global.file.prices,
            coverage,
        },
    )?;
    if to_stdout {
        std::io::stdout().write_all(page(&report).as_bytes())?;
    } else if let Some(path) = &args.html {
        write_page(path, &page(&report))?;
        if !global.quiet && !global.json {
            println!(
                "report of {} set(s) written to {}",
                report.sets.len(),
                path.display()
            );
        }
    }
    if global.json {
        output::print_json(&report);
    }
    Ok(exit::OK)
}

/// Writes `html` to `path` through a temporary file renamed over it: a reader (a web
/// server) never sees half a page, and a symlink at `path` is replaced, not followed.
fn write_page(path: &Path, html: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: no file name", path.display()))?;
    // The directory resolved without another user's symlink on the way, then used through
    // its descriptor: the page lands where the operator named, not where a link points.
    let fd = strata::restore::open_trusted_existing(dir)
        .with_context(|| format!("writing the report into {}", dir.display()))?;
    let held = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let mut tmp = tempfile::Builder::new()
        .prefix(".strata-report.")
        .tempfile_in(&held)
        .with_context(|| format!("writing the report into {}", dir.display()))?;
    tmp.write_all(html.as_bytes())?;
    tmp.as_file().sync_all()?;
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(held.join(name))
        .with_context(|| format!("writing the report {}", path.display()))?;
    Ok(())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;\
color:#222;padding:0 1em}h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;\
text-align:left;vertical-align:top}th{background:#f4f4f4}.holds{color:#176117}\
.fails{color:#b00020;font-weight:bold}.unknown{color:#8a5a00;font-weight:bold}\
figure{margin:0}.flag{display:inline-block;margin-left:.5em;padding:0 .4em;border-radius:3px;font-size:.8em;\
color:#fff;background:#b00020}.charts{display:flex;flex-wrap:wrap;gap:1em}\
pre{background:#f7f7f7;padding:.5em;max-height:12em;overflow:auto;white-space:pre-wrap}";

/// The page: a summary table, then one section per set, then verification and storage.
fn page(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Strata report {}</title><style>{STYLE}</style></head><body>\
         <h1>Strata report</h1><p>Repository {} &middot; generated {}</p>",
        esc(&output::when(&r.generated)),
        esc(&r.repository_id),
        esc(&output::when(&r.generated)),
    );
    summary(&mut h, r);
    for s in &r.sets {
        set_section(&mut h, s);
    }
    verification(&mut h, r);
    storage(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn summary(h: &mut String, r: &Report) {
    h.push_str(
        "<table id=\"summary\"><tr><th>set</th><th>last backup</th><th>RPO</th><th>RTO</th>\
         <th>drill</th><th>projected restore</th></tr>",
    );
    for s in &r.sets {
        let _ = write!(
            h,
            "<tr data-set=\"{0}\"><td><a href=\"#set-{1}\">{0}</a>{2}</td><td>{3}</td>",
            esc(&s.set),
            anchor(&s.set),
            if s.stale {
                flag("STALE")
            } else {
                String::new()
            },
            s.last_backup_age_secs
                .map(|a| format!("{} ago", output::age(a)))
                .unwrap_or_else(|| "none".into()),
        );
        for v in [&s.objectives.rpo, &s.objectives.rto, &s.objectives.drill] {
            match v {
                Some(v) => {
                    let _ = write!(h, "<td class=\"{0}\">{0}</td>", v.state());
                }
                None => h.push_str("<td>none set</td>"),
            }
        }
        let projected = s.objectives.projection.as_ref();
        let _ = write!(
            h,
            "<td>{}</td></tr>",
            projected.map_or("unknown".into(), |p| output::age(p.total_secs()))
        );
    }
    h.push_str("</table>");
}

fn set_section(h: &mut String, s: &SetReport) {
    let _ = write!(
        h,
        "<section class=\"set\" id=\"set-{}\" data-set=\"{}\" data-stale=\"{}\"><h2>{}{}</h2>",
        anchor(&s.set),
        esc(&s.set),
        s.stale,
        esc(&s.set),
        if s.stale {
            flag("STALE")
        } else {
            String::new()
        },
    );
    h.push_str("<ul class=\"objectives\">");
    let bound =
        |secs: Option<i64>| secs.map_or(String::new(), |b| format!(" {}", output::age(b as f64)));
    let named = [
        ("rpo", "RPO", bound(s.rpo_secs)),
        ("rto", "RTO", bound(s.rto_secs)),
        ("drill", "Drill every", bound(s.drill_interval_secs)),
    ];
    for (key, title, b) in named {
        let verdict = s.objectives.verdicts().find(|(k, _)| *k == key);
        match verdict {
            Some((_, v)) => {
                let _ = write!(
                    h,
                    "<li class=\"objective\" data-objective=\"{key}\" data-state=\"{0}\">\
                     {title}{b}: <span class=\"{0}\">{1}</span> &mdash; {2}</li>",
                    v.state(),
                    v.state().to_uppercase(),
                    esc(v.reason())
                );
            }
            None => {
                let _ = write!(
                    h,
                    "<li class=\"objective\" data-objective=\"{key}\" data-state=\"none\">\
                     {title}: none set</li>"
                );
            }
        }
    }
    h.push_str("</ul>");
    backups(h, s);
    drills(h, &s.drills);
    h.push_str("</section>");
}

fn backups(h: &mut String, s: &SetReport) {
    let n = s.backups.len();
    let _ = write!(h, "<h3>Backups</h3><p>{n} snapshot(s)");
    if let Some(last) = s.backups.last() {
        let _ = write!(
            h,
            "; newest {} ({}, {} files){}",
            esc(&output::when(&last.time)),
            output::bytes(last.total_bytes),
            last.files,
            if s.growth.anomaly {
                flag("SIZE ANOMALY")
            } else {
                String::new()
            }
        );
    }
    if let Some(r) = &s.runs {
        let _ = write!(
            h,
            ". Runs recorded in the metrics file: <span class=\"runs\">{} succeeded, {} \
             partial, <span class=\"{}\">{} failed</span></span>{}",
            r.succeeded,
            r.partial,
            if r.failed > 0 { "fails" } else { "holds" },
            r.failed,
            r.last_exit_code
                .map(|c| format!("; the last exited {c}"))
                .unwrap_or_default()
        );
    }
    h.push_str("</p>");
    let points: Vec<_> = s
        .backups
        .iter()
        .filter_map(|b| {
            let t = chrono::DateTime::parse_from_rfc3339(&b.time).ok()?;
            Some((t.with_timezone(&chrono::Utc), b))
        })
        .collect();
    if points.len() < 2 {
        return;
    }
    let size: Vec<_> = points
        .iter()
        .map(|(t, b)| (*t, b.total_bytes as f64))
        .collect();
    let added: Vec<_> = points
        .iter()
        .map(|(t, b)| (*t, b.bytes_added as f64))
        .collect();
    let time: Vec<_> = points.iter().map(|(t, b)| (*t, b.duration_secs)).collect();
    h.push_str("<div class=\"charts\">");
    chart(h, "Size of the set (bytes)", &[("size", &size, BLUE)], true);
    chart(
        h,
        "Added per backup (bytes)",
        &[("added", &added, RED)],
        true,
    );
    chart(
        h,
        "Backup duration (seconds)",
        &[("duration", &time, GREEN)],
        false,
    );
    h.push_str("</div>");
}

type Series<'a> = (
    &'a str,
    &'a [(chrono::DateTime<chrono::Utc>, f64)],
    RGBColor,
);

/// A line chart over time as inline SVG (plotters' SVG backend).
fn chart(h: &mut String, title: &str, series: &[Series], bytes: bool) {
    let mut svg = String::new();
    let drawn = draw(&mut svg, title, series, bytes);
    match drawn {
        Ok(()) => {
            let _ = write!(h, "<figure class=\"chart\">{svg}</figure>");
        }
        Err(e) => {
            let _ = write!(h, "<p>(chart {} not drawn: {})</p>", esc(title), esc(&e));
        }
    }
}

fn draw(svg: &mut String, title: &str, series: &[Series], bytes: bool) -> Result<(), String> {
    let all = series.iter().flat_map(|(_, p, _)| p.iter());
    let (t0, t1) = all
        .clone()
        .fold((None, None), |(lo, hi): (Option<_>, Option<_>), (t, _)| {
            (
                lo.map_or(Some(*t), |l: chrono::DateTime<chrono::Utc>| Some(l.min(*t))),
                hi.map_or(Some(*t), |h: chrono::DateTime<chrono::Utc>| Some(h.max(*t))),
            )
        });
    let (Some(t0), Some(t1)) = (t0, t1) else {
        return Err("no points".into());
    };
    // An infinite value (a crafted summary's duration) made the axis's ticks loop for
    // ever (hostile pass 10): such a chart is not drawn, and says why.
    if all.clone().any(|(_, v)| !v.is_finite()) {
        return Err("a value that is not a finite number (a damaged snapshot summary)".into());
    }
    let t1 = t1.max(t0 + chrono::Duration::seconds(1));
    let top = all.map(|(_, v)| *v).fold(0.0, f64::max).max(1.0) * 1.1;
    let root = SVGBackend::with_string(svg, (580, 260)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(t0..t1, 0.0..top)
        .map_err(|x| e(&x))?;
    let span = (t1 - t0).num_seconds();
    let fmt = if span > 2 * 86_400 { "%m-%d" } else { "%H:%M" };
    c.configure_mesh()
        .light_line_style(WHITE)
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|t| t.format(fmt).to_string())
        .y_label_formatter(&|v| match bytes {
            true => output::bytes(*v as u64),
            false => format!("{v:.1}"),
        })
        .draw()
        .map_err(|x| e(&x))?;
    for (_, points, color) in series {
        c.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    drop(c);
    Ok(())
}

fn drills(h: &mut String, drills: &[Drill]) {
    h.push_str("<h3>Drills</h3>");
    if drills.is_empty() {
        h.push_str("<p class=\"unknown\">no drill yet</p>");
        return;
    }
    h.push_str(
        "<table class=\"drills\"><tr><th>when</th><th>result</th><th>restored</th>\
         <th>throughput</th><th>projected full restore</th><th>verify</th></tr>",
    );
    for d in drills.iter().rev() {
        let verify = match &d.verify {
            None => "none".to_string(),
            Some(v) if v.passed() => format!(
                "<code>{}</code> passed in {:.1}s",
                esc(&v.command),
                v.duration_secs
            ),
            Some(v) => format!(
                "<code>{}</code> <span class=\"fails\">{}</span> after {:.1}s<pre>{}</pre>",
                esc(&v.command),
                esc(&v.outcome),
                v.duration_secs,
                esc(&v.output_tail)
            ),
        };
        let _ = write!(
            h,
            "<tr class=\"drill\" data-passed=\"{}\"><td>{}</td><td class=\"{}\">{}</td>\
             <td>{} files, {}{}</td><td>{}/s</td><td>{}</td><td>{verify}</td></tr>",
            d.passed(),
            esc(&output::when(&d.time)),
            if d.passed() { "holds" } else { "fails" },
            if d.passed() {
                "passed".to_string()
            } else {
                format!("FAILED: {}", esc(&d.failure()))
            },
            d.files,
            output::bytes(d.bytes),
            if d.sample < 1.0 {
                format!(" ({:.1}% sample)", d.sample * 100.0)
            } else {
                String::new()
            },
            output::bytes(d.throughput() as u64),
            if d.passed() {
                output::age(d.projected_secs)
            } else {
                "none".into()
            },
        );
    }
    h.push_str("</table>");
}

fn verification(h: &mut String, r: &Report) {
    let c = &r.verification;
    let _ = write!(
        h,
        "<h2 id=\"verification\">Verification</h2><p>{:.1}% of {} packs verified byte by byte \
         in the last {} days; {} never; {} damaged when last read; last check {}.</p>",
        100.0 * c.fraction_recent(),
        c.packs,
        audit::RECENT_DAYS,
        c.never_verified,
        c.damaged.len(),
        c.last_check
            .as_deref()
            .map_or("never".into(), |t| esc(&output::when(t)))
    );
}

fn storage(h: &mut String, r: &Report) {
    h.push_str(
        "<h2 id=\"storage\">Storage</h2><table><tr><th>kind</th><th>storage class</th>\
         <th>objects</th><th>bytes</th></tr>",
    );
    for c in &r.storage {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.kind,
            esc(&c.storage_class),
            c.objects,
            output::bytes(c.bytes)
        );
    }
    h.push_str("</table>");
    let cost = &r.monthly_cost;
    if cost.items.is_empty() {
        h.push_str("<p>No prices in the config: no cost estimate.</p>");
        return;
    }
    let items: Vec<String> = (cost.items.iter())
        .map(|(k, v)| format!("{} {v:.2}", esc(k)))
        .collect();
    let _ = write!(
        h,
        "<p id=\"cost\">Estimated monthly cost: {:.2} ({}){}</p>",
        cost.total(),
        items.join(", "),
        if cost.unpriced.is_empty() {
            String::new()
        } else {
            format!("; no price for {}", esc(&cost.unpriced.join(", ")))
        }
    );
}

fn flag(text: &str) -> String {
    format!("<span class=\"flag\">{text}</span>")
}

/// An id for a set's section: its name's bytes in hex (names may hold anything HTML ids
/// should not).
fn anchor(name: &str) -> String {
    hex::encode(name.as_bytes())
}

/// Text for HTML content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_become_markup() {
        assert_eq!(
            esc("<script>a&b\"c'd</script>\x1b"),
            "&lt;script&gt;a&amp;b&quot;c&#39;d&lt;/script&gt;\\u{1b}"
        );
        assert_eq!(anchor("a b"), "612062");
    }

    /// Hostile pass 10: an infinite duration made the chart's axis loop for ever.
    #[test]
    fn a_chart_with_an_infinite_value_ends_without_drawing() {
        let t = chrono::Utc::now();
        let points = [(t, 1.0), (t + chrono::Duration::hours(1), f64::INFINITY)];
        let mut svg = String::new();
        let drawn = draw(&mut svg, "t", &[("time", &points[..], BLUE)], false);
        assert!(drawn.unwrap_err().contains("not a finite number"));
        let finite = [(t, 1.0), (t + chrono::Duration::hours(1), 2.0)];
        draw(&mut svg, "t", &[("time", &finite[..], BLUE)], false).unwrap();
    }
}
