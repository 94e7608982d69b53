//! The status page as HTML, built with maud's `html!`: every value it is given is escaped, so
//! text from the network (ids, event types, errors) can only become markup through
//! [`PreEscaped`], which wraps the stylesheet and nothing else.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Instant;

use chrono::{DateTime, NaiveDateTime};
use maud::{DOCTYPE, Escaper, Markup, PreEscaped, Render, html};

use super::page::{
    CHART_MINUTES, ClerkHealth, FAILED_COUNTED_UP_TO, Figures, OTHER, OUTCOMES, PageData,
};
use crate::sync::Outcome;

/// Longest text shown of an id or an error (they come from the network).
const MAX_ID_CHARS: usize = 200;
const MAX_ERROR_CHARS: usize = 1_000;
/// The page reloads itself this often (a plain `<meta>` refresh).
const REFRESH_SECONDS: u32 = 60;

/// The message shown after a replay, from the redirect's query string, and whether it is good
/// news. Only known results are shown, each with a fixed text around the svix id.
pub(super) fn flash(query: Option<&str>) -> Option<(bool, Markup)> {
    let query = query?;
    let mut svix_id = None;
    let mut result = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "replayed" => svix_id = Some(value.into_owned()),
            "result" => result = Some(value.into_owned()),
            _ => {}
        }
    }
    let svix_id = svix_id?;
    let id = Text::cut(&svix_id, MAX_ID_CHARS);
    let message = match result?.as_str() {
        "missing" => (false, html! { "No stored event has the svix id " (id) "." }),
        "error" => (
            false,
            html! { "Replaying " (id) " failed: the database did not answer. The log says why." },
        ),
        "failed" => (
            false,
            html! { "Replayed " (id) ": it failed again (its error is below)." },
        ),
        other => {
            let outcome = Outcome::parse(other)?;
            (true, html! { "Replayed " (id) ": " (outcome.as_str()) "." })
        }
    };
    Some(message)
}

/// Text from the network (ids, event types, errors) as the page shows it: escaped, and cut to
/// a length. maud escapes `&<>"`; `'` is escaped too, so such text is inert in any attribute
/// quoting and reads as it always has in the page's source.
#[derive(Debug, Clone)]
struct Text<'a>(Cow<'a, str>);

impl<'a> Text<'a> {
    fn whole(text: &'a str) -> Self {
        Text(text.into())
    }

    /// At most `max` characters, with an ellipsis when cut.
    fn cut(text: &'a str, max: usize) -> Self {
        match text.char_indices().nth(max) {
            Some((cut, _)) => Text(format!("{}…", &text[..cut]).into()),
            None => Text::whole(text),
        }
    }
}

impl Render for Text<'_> {
    fn render_to(&self, buffer: &mut String) {
        for (i, part) in self.0.split('\'').enumerate() {
            if i > 0 {
                buffer.push_str("&#39;");
            }
            let _ = Escaper::new(buffer).write_str(part);
        }
    }
}

/// The stylesheet: raw text inside `<style>`, where a browser decodes no entities, so it
/// cannot go through the escaper. It is made of constants only.
static STYLESHEET: LazyLock<PreEscaped<String>> = LazyLock::new(|| {
    let mut css = String::from(CSS);
    for (outcome, colour) in OUTCOMES.iter().chain([&OTHER]) {
        let _ = writeln!(css, ".c-{outcome}{{background:{colour}}}");
    }
    PreEscaped(css)
});

pub(super) fn render(data: &PageData, flash: Option<(bool, Markup)>, form_token: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content={ (REFRESH_SECONDS) "; url=status" };
                link rel="icon" href="data:,";
                title { "clerk-sync status" }
                style { (*STYLESHEET) }
            }
            body {
                main {
                    header {
                        h1 { "clerk-sync status" }
                        span class="muted" {
                            (data.now.format("%Y-%m-%d %H:%M:%S UTC").to_string()) " · "
                            (data.backend) " · reloads every " (REFRESH_SECONDS) " s"
                        }
                    }
                    "\n"
                    @if let Some((good, message)) = flash {
                        p class=(if good { "flash" } else { "flash bad" }) role="status" id="flash" {
                            (message)
                        }
                        "\n"
                    }
                    (cards(data))
                    @match &data.figures {
                        Ok(figures) => {
                            (chart(figures, data.first_minute))
                            (failed_events(figures, form_token))
                            (latest_events(figures))
                        }
                        Err(e) => {
                            section class="panel" {
                                h2 { "Events" }
                                p class="error" id="figures-error" {
                                    "The figures could not be read: " (Text::whole(e))
                                }
                            }
                            "\n"
                        }
                    }
                    footer {
                        "Times are UTC. Delivery lag is when an event was received minus the \
                         timestamp Svix signed its delivery with. Replaying applies a stored \
                         event again by the rules of its first delivery."
                    }
                }
            }
        }
    }
}

/// A figure with a title and a line of detail. `tone` is `ok`, `bad` or empty (neutral).
fn card(tone: &str, id: &str, title: &str, big: &str, detail: Markup) -> Markup {
    html! {
        div class={ "card " (tone) } {
            h2 { (title) }
            p class="big" id=(id) { (big) }
            p class="muted" { (detail) }
        }
        "\n"
    }
}

fn cards(data: &PageData) -> Markup {
    let database = match &data.database {
        Ok(latency) => card(
            "ok",
            "database-health",
            "Database",
            "OK",
            html! { (data.backend) " answered in " (latency.as_millis()) " ms" },
        ),
        Err(e) => card(
            "bad",
            "database-health",
            "Database",
            "Down",
            html! { (Text::whole(e)) },
        ),
    };
    let ago = |at: &Instant| format!("checked {} s ago", at.elapsed().as_secs());
    let clerk = match &data.clerk {
        ClerkHealth::NotConfigured => card(
            "",
            "clerk-health",
            "Clerk API",
            "Not configured",
            html! { "set CLERK_SECRET_KEY to check it" },
        ),
        ClerkHealth::Checked { at, result: Ok(n) } => card(
            "ok",
            "clerk-health",
            "Clerk API",
            "OK",
            html! { (thousands(*n)) " users at Clerk · " (ago(at)) },
        ),
        ClerkHealth::Checked { at, result: Err(e) } => card(
            "bad",
            "clerk-health",
            "Clerk API",
            "Unreachable",
            html! { (Text::cut(e, MAX_ERROR_CHARS)) " · " (ago(at)) },
        ),
    };
    html! {
        section class="cards" {
            (database)
            (clerk)
            @if let Ok(figures) = &data.figures {
                (users_card(figures))
                (organizations_card(figures))
                (lag_card(&figures.lags_ms))
                (failed_card(figures.failed_count))
            }
        }
        "\n"
    }
}

fn users_card(figures: &Figures) -> Markup {
    match (figures.live_users, figures.soft_deleted_users) {
        (Some(live), Some(soft_deleted)) => card(
            "",
            "users-live",
            "Users",
            &thousands(live),
            html! { "live · " span id="users-soft-deleted" { (thousands(soft_deleted)) } " soft-deleted" },
        ),
        _ => card(
            "",
            "users-live",
            "Users",
            &figures
                .estimated_users
                .map_or("?".to_owned(), |n| format!("≈ {}", thousands(n))),
            html! { "rows, estimated: counting took too long" },
        ),
    }
}

fn organizations_card(figures: &Figures) -> Markup {
    let o = &figures.organizations;
    let memberships = |count: String| {
        html! { span id="memberships-count" { (count) } " memberships" }
    };
    match (o.live, o.soft_deleted, o.memberships) {
        (Some(live), Some(soft_deleted), Some(members)) => card(
            "",
            "organizations-live",
            "Organizations",
            &thousands(live),
            html! {
                "live · " span id="organizations-soft-deleted" { (thousands(soft_deleted)) }
                " soft-deleted · " (memberships(thousands(members)))
            },
        ),
        _ if o.estimated => {
            let estimate =
                |n: Option<u64>| n.map_or("?".to_owned(), |n| format!("≈ {}", thousands(n)));
            card(
                "",
                "organizations-live",
                "Organizations",
                &estimate(o.estimated_organizations),
                html! {
                    "rows, estimated: counting took too long · "
                    (memberships(estimate(o.estimated_memberships)))
                },
            )
        }
        _ => card(
            "",
            "organizations-live",
            "Organizations",
            "?",
            html! { "not counted: the organization tables could not be read (see the log)" },
        ),
    }
}

fn lag_card(lags_ms: &[i64]) -> Markup {
    let mut lags = lags_ms.to_vec();
    lags.sort_unstable();
    let Some(&max) = lags.last() else {
        return card(
            "",
            "lag-median",
            "Delivery lag",
            "—",
            html! { "no events yet" },
        );
    };
    let middle = lags.len() / 2;
    let median = if lags.len().is_multiple_of(2) {
        (lags[middle - 1] + lags[middle]) / 2
    } else {
        lags[middle]
    };
    card(
        "",
        "lag-median",
        "Delivery lag",
        &duration_text(median),
        html! {
            "median · max " span id="lag-max" { (duration_text(max)) } " · last " (lags.len()) " events"
        },
    )
}

fn failed_card(failed_count: u64) -> Markup {
    let capped = if failed_count >= FAILED_COUNTED_UP_TO {
        "+"
    } else {
        ""
    };
    let (tone, detail) = if failed_count > 0 {
        ("bad", "stored with their error; replay them below")
    } else {
        ("ok", "none")
    };
    card(
        tone,
        "failed-count",
        "Failed events",
        &format!("{}{capped}", thousands(failed_count)),
        html! { (detail) },
    )
}

/// One segment of a minute's bar.
struct Segment {
    minute: i64,
    outcome: &'static str,
    colour: &'static str,
    count: u64,
    x: f64,
    y_top: f64,
    y_bottom: f64,
}

/// Stacked bars: one per minute, one segment per outcome, with a legend.
fn chart(figures: &Figures, first_minute: i64) -> Markup {
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 220.0;
    const LEFT: f64 = 40.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 24.0;
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / CHART_MINUTES as f64;
    let totals: Vec<u64> = figures.counts.iter().map(|c| c.iter().sum()).collect();
    let hour_total: u64 = totals.iter().sum();
    let peak = totals.iter().copied().max().unwrap_or(0);
    let step = nice_step(peak);
    let top_value = (peak.div_ceil(step) * step).max(step);
    let y = |value: f64| TOP + plot_height - value / top_value as f64 * plot_height;

    let mut segments = Vec::new();
    for (i, counts) in figures.counts.iter().enumerate() {
        let mut below = 0u64;
        for (&(outcome, colour), &count) in OUTCOMES.iter().chain([&OTHER]).zip(counts) {
            if count > 0 {
                segments.push(Segment {
                    minute: first_minute + i as i64,
                    outcome,
                    colour,
                    count,
                    x: LEFT + i as f64 * slot + 1.0,
                    y_top: y((below + count) as f64),
                    y_bottom: y(below as f64),
                });
                below += count;
            }
        }
    }
    let labels = [0, 15, 30, 45, CHART_MINUTES - 1].map(|i| {
        // The last label ends at the plot's right edge rather than overflowing it.
        let (x, anchor) = if i == CHART_MINUTES - 1 {
            (WIDTH - RIGHT, "end")
        } else {
            (LEFT + (i as f64 + 0.5) * slot, "middle")
        };
        (x, anchor, minute_text(first_minute + i))
    });
    let legend = OUTCOMES
        .iter()
        .chain([&OTHER])
        .enumerate()
        .map(|(series, &(outcome, _))| {
            (
                outcome,
                figures.counts.iter().map(|c| c[series]).sum::<u64>(),
            )
        })
        .filter(|&(outcome, total)| outcome != OTHER.0 || total > 0);

    // One element a line, as the tests (and a reader of the source) take them.
    html! {
        section class="panel" id="chart" {
            h2 { "Events per minute, last hour " span class="muted" { "(" (thousands(hour_total)) " in all)" } }
            "\n"
            svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                aria-label="Events per minute by outcome over the last hour"
                xmlns="http://www.w3.org/2000/svg" {
                "\n"
                @for tick in (0..=top_value).step_by(step as usize) {
                    @let ty = one_decimal(y(tick as f64));
                    line class="grid" x1=(LEFT) x2=(WIDTH - RIGHT) y1=(ty) y2=(ty) {}
                    text x=(LEFT - 6.0) y=(one_decimal(y(tick as f64) + 4.0)) text-anchor="end" {
                        (thousands(tick))
                    }
                    "\n"
                }
                @for s in &segments {
                    rect class="seg" data-minute=(s.minute) data-outcome=(s.outcome)
                        data-count=(s.count) x=(one_decimal(s.x)) y=(one_decimal(s.y_top))
                        width=(one_decimal(slot - 2.0)) height=(one_decimal(s.y_bottom - s.y_top))
                        fill=(s.colour) {
                        title { (minute_text(s.minute)) " UTC · " (s.outcome) ": " (s.count) }
                    }
                    "\n"
                }
                @for (x, anchor, label) in &labels {
                    text x=(one_decimal(*x)) y=(HEIGHT - 6.0) text-anchor=(anchor) { (label) }
                    "\n"
                }
                @if hour_total == 0 {
                    text x=(LEFT + plot_width / 2.0) y=(TOP + plot_height / 2.0)
                        text-anchor="middle" class="empty" { "No events in the last hour" }
                    "\n"
                }
            }
            "\n"
            ul class="legend" {
                @for (outcome, total) in legend {
                    li class=(if total == 0 { "zero" } else { "" }) data-outcome=(outcome) {
                        span class={ "dot c-" (outcome) } {} (outcome) " " b { (thousands(total)) }
                    }
                }
            }
            "\n"
        }
        "\n"
    }
}

/// A round step for about four gridlines up to `peak`: 1, 2 or 5 times a power of ten.
fn nice_step(peak: u64) -> u64 {
    let rough = peak.div_ceil(4).max(1);
    let mut power = 1u64;
    loop {
        for factor in [1, 2, 5] {
            if factor * power >= rough {
                return factor * power;
            }
        }
        power = power.saturating_mul(10);
    }
}

fn failed_events(figures: &Figures, form_token: &str) -> Markup {
    html! {
        section class="panel" id="failed" {
            h2 { "Failed events " span class="muted" { "(" (thousands(figures.failed_count)) ")" } }
            "\n"
            @if figures.failed.is_empty() {
                p class="muted" { "None: every stored event was applied." }
                "\n"
            } @else {
                div class="scroll" { table {
                    thead { tr {
                        th { "received (UTC)" } th { "svix id" } th { "type" } th { "user id" }
                        th { "error" } th {}
                    } }
                    "\n"
                    tbody {
                        @for event in &figures.failed {
                            tr data-svix-id=(Text::whole(&event.svix_id)) {
                                td class="time" { (time_text(event.received_at)) }
                                td class="mono" { (Text::cut(&event.svix_id, MAX_ID_CHARS)) }
                                td { (Text::cut(&event.event_type, MAX_ID_CHARS)) }
                                td class="mono" { (optional_id(event.user_id.as_deref())) }
                                td class="error" {
                                    (Text::cut(
                                        event.error.as_deref().unwrap_or("(no error recorded)"),
                                        MAX_ERROR_CHARS,
                                    ))
                                    @if let Some(at) = event.replayed_at {
                                        br;
                                        span class="muted" { "last replayed " (time_text(at)) }
                                    }
                                }
                                td {
                                    form method="post" action={ "status/replay/" (path_segment(&event.svix_id)) } {
                                        input type="hidden" name="token" value=(form_token);
                                        button type="submit" { "Replay" }
                                    }
                                }
                            }
                            "\n"
                        }
                    }
                } }
                "\n"
                @if figures.failed_count > figures.failed.len() as u64 {
                    p class="muted" {
                        "The newest " (figures.failed.len()) " are listed; "
                        code { "clerk-sync events replay --failed" } " replays them all."
                    }
                    "\n"
                }
            }
        }
        "\n"
    }
}

fn latest_events(figures: &Figures) -> Markup {
    html! {
        section class="panel" id="latest" {
            h2 { "Latest events" }
            "\n"
            @if figures.latest.is_empty() {
                p class="muted" { "No events yet. Point Clerk's webhook at /api/webhooks/clerk." }
                "\n"
            } @else {
                div class="scroll" { table {
                    thead { tr {
                        th { "received (UTC)" } th { "svix id" } th { "type" } th { "user id" }
                        th { "outcome" }
                    } }
                    "\n"
                    tbody {
                        @for event in &figures.latest {
                            tr data-svix-id=(Text::whole(&event.svix_id)) {
                                td class="time" { (time_text(event.received_at)) }
                                td class="mono" { (Text::cut(&event.svix_id, MAX_ID_CHARS)) }
                                td { (Text::cut(&event.event_type, MAX_ID_CHARS)) }
                                td class="mono" { (optional_id(event.user_id.as_deref())) }
                                td { (outcome(&event.outcome)) }
                            }
                            "\n"
                        }
                    }
                } }
                "\n"
            }
        }
        "\n"
    }
}

fn outcome(outcome: &str) -> Markup {
    html! {
        span class="outcome" {
            span class={ "dot c-" (series_class(outcome)) } {}
            (Text::cut(outcome, MAX_ID_CHARS))
        }
    }
}

fn optional_id(id: Option<&str>) -> Markup {
    html! {
        @match id {
            Some(id) => (Text::cut(id, MAX_ID_CHARS)),
            None => span class="muted" { "—" },
        }
    }
}

/// The colour class of an outcome (`c-created`, …, `c-other`).
fn series_class(outcome: &str) -> &'static str {
    OUTCOMES
        .iter()
        .find(|(o, _)| *o == outcome)
        .map_or(OTHER.0, |(o, _)| *o)
}

/// A path segment, percent-encoded (all but unreserved characters).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A coordinate, to a tenth of a pixel.
fn one_decimal(value: f64) -> String {
    format!("{value:.1}")
}

/// 1234567 as "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration_text(ms: i64) -> String {
    let seconds = ms as f64 / 1000.0;
    match ms.unsigned_abs() {
        0..10_000 => format!("{seconds:.1} s"),
        10_000..120_000 => format!("{seconds:.0} s"),
        120_000..7_200_000 => format!("{:.1} min", seconds / 60.0),
        _ => format!("{:.1} h", seconds / 3600.0),
    }
}

fn time_text(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn minute_text(minute: i64) -> String {
    DateTime::from_timestamp(minute * 60, 0)
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_default()
}

const CSS: &str = r#"
:root{color-scheme:light dark;--bg:#f5f6f8;--fg:#1d2433;--muted:#667085;--card:#fff;--line:#e3e6eb;--ok:#1a7f37;--bad:#d32f2f;--off:#98a2b3}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--fg:#e6e8eb;--muted:#98a2b3;--card:#171b21;--line:#2b313b}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
main{max-width:1180px;margin:0 auto;padding:20px}
header{display:flex;align-items:baseline;gap:12px;flex-wrap:wrap}
h1{font-size:20px;margin:0}
h2{font-size:15px;margin:0 0 10px}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin:16px 0}
.card{background:var(--card);border:1px solid var(--line);border-top:3px solid var(--off);border-radius:8px;padding:10px 14px}
.card.ok{border-top-color:var(--ok)}
.card.bad{border-top-color:var(--bad)}
.card h2{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:0 0 2px}
.card p{margin:2px 0}
.big{font-size:22px;font-weight:650;white-space:nowrap}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px;margin:12px 0}
.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:var(--line);stroke-width:1}
.chart text{fill:var(--muted);font-size:11px}
.legend{list-style:none;padding:0;margin:8px 0 0;display:flex;flex-wrap:wrap;gap:4px 16px}
.legend .zero{opacity:.45}
.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
tr:last-child td{border-bottom:0}
th{font-weight:600;color:var(--muted);font-size:12px;white-space:nowrap}
td.time{white-space:nowrap}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;white-space:nowrap}
.outcome{white-space:nowrap}
.error{color:var(--bad);white-space:pre-wrap;word-break:break-word}
.flash{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--ok);border-radius:8px;padding:10px 14px;margin:16px 0 0}
.flash.bad{border-left-color:var(--bad)}
form{margin:0}
button{font:inherit;padding:3px 12px;border-radius:6px;border:1px solid var(--line);background:var(--bg);color:var(--fg);cursor:pointer}
button:hover{border-color:var(--muted)}
footer{margin:16px 0;color:var(--muted);font-size:12px}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_network_is_escaped_quotes_and_all() {
        let shown = html! { p title=(Text::whole(r#"<a href="x">'s & co"#)) { (Text::whole("</p><script>'")) } };
        assert_eq!(
            shown.into_string(),
            r#"<p title="&lt;a href=&quot;x&quot;&gt;&#39;s &amp; co">&lt;/p&gt;&lt;script&gt;&#39;</p>"#
        );
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        let cut = |text, max| html! { (Text::cut(text, max)) }.into_string();
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("<<<", 1), "&lt;…");
    }

    #[test]
    fn the_flash_shows_known_results_only() {
        let shown = |query| flash(Some(query)).map(|(good, m)| (good, m.into_string()));
        assert_eq!(
            shown("replayed=msg_%3Cb%3E&result=created"),
            Some((true, "Replayed msg_&lt;b&gt;: created.".to_owned()))
        );
        assert_eq!(
            shown("replayed=msg_1&result=missing"),
            Some((false, "No stored event has the svix id msg_1.".to_owned()))
        );
        assert_eq!(shown("replayed=msg_1&result=%3Cscript%3E"), None);
        assert_eq!(shown("result=created"), None);
    }

    #[test]
    fn path_segments_keep_unreserved_characters_only() {
        assert_eq!(path_segment("msg_1-a.b~c"), "msg_1-a.b~c");
        assert_eq!(path_segment(r#"<"/ é"#), "%3C%22%2F%20%C3%A9");
    }
}
