//! The report's drawing kit: one style per model, legends outside the plot
//! area, and small multiples.
//!
//! **Palette.** Fifteen and more series stay apart by three cues at once: a
//! hue *family* per model family (blocking: reds and oranges; readiness:
//! blues; signal-driven: purples; completion: greens; process-manager
//! hybrids: browns; real servers — peers — greys), then within a family a
//! shade, a dash pattern and a marker. A model's style depends on its name
//! only, so it is the same in every chart of every report. Peers are drawn
//! *outlined*: hollow markers and bars, so a real server never passes for
//! one of ours. A model this file does not know gets a neutral teal.
//!
//! **Legends** are drawn in a column of their own, right of the plot, in
//! family order with a heading per family, never over the data.

use plotters::coord::Shift;
use plotters::prelude::*;

/// A drawing's result (plotters' errors are boxed).
pub type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The families the palette is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// A process or thread blocks per connection or request.
    Blocking,
    /// One thread multiplexes with a readiness API (or sweeps).
    Readiness,
    /// Readiness delivered as signals.
    Signal,
    /// The kernel completes operations and reports them.
    Completion,
    /// Process managers and reactor + worker hybrids.
    Hybrid,
    /// Real servers (nginx, Apache, php-fpm, …) run as rows.
    Peer,
    /// A model this palette does not know.
    Other,
}

impl Family {
    /// Every family, in legend order.
    pub const ALL: [Family; 7] = [
        Family::Blocking,
        Family::Readiness,
        Family::Signal,
        Family::Completion,
        Family::Hybrid,
        Family::Peer,
        Family::Other,
    ];

    /// The heading of its legend group and small multiple.
    pub fn name(self) -> &'static str {
        match self {
            Family::Blocking => "blocking",
            Family::Readiness => "readiness",
            Family::Signal => "signal-driven",
            Family::Completion => "completion",
            Family::Hybrid => "hybrids",
            Family::Peer => "peers (real servers)",
            Family::Other => "other",
        }
    }
}

const BLOCKING: &[(&str, (u8, u8, u8))] = &[
    ("iterative", (103, 0, 13)),
    ("fork", (203, 24, 29)),
    ("prefork", (241, 105, 19)),
    ("thread", (166, 54, 3)),
    ("threadpool", (250, 80, 80)),
    ("cgi", (200, 140, 0)),
];
const READINESS: &[(&str, (u8, u8, u8))] = &[
    ("nonblocking", (8, 48, 107)),
    ("select", (66, 146, 198)),
    ("poll", (33, 113, 181)),
    ("epoll", (0, 90, 200)),
    ("mio", (90, 170, 230)),
    ("oneshot", (20, 70, 150)),
    ("tokio", (60, 130, 220)),
];
const SIGNAL: &[(&str, (u8, u8, u8))] = &[("sigio", (106, 61, 154)), ("aio", (170, 120, 210))];
const COMPLETION: &[(&str, (u8, u8, u8))] = &[("uring", (0, 109, 44)), ("monoio", (65, 171, 93))];
const HYBRID: &[(&str, (u8, u8, u8))] = &[("fpm", (140, 81, 10)), ("swoole", (191, 129, 45))];
/// Real servers, matched by name prefix (`apache-event` is an `apache`).
/// The peers' rows add their names here.
const PEERS: &[(&str, (u8, u8, u8))] = &[
    ("nginx", (20, 20, 20)),
    ("apache", (90, 90, 90)),
    ("httpd", (90, 90, 90)),
    ("lighttpd", (60, 60, 60)),
    ("php-fpm", (120, 120, 120)),
    ("fcgiwrap", (150, 150, 150)),
];

/// How a line is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dash {
    /// Unbroken.
    Solid,
    /// 8 on, 4 off.
    Dashed,
    /// 2 on, 3 off.
    Dotted,
    /// 14 on, 4 off.
    Long,
}

/// The shape at each data point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// ●
    Circle,
    /// ■
    Square,
    /// ▲
    Triangle,
    /// ◆
    Diamond,
    /// ✕
    Cross,
}

/// A model's look, the same in every chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    /// The model's colour.
    pub color: RGBColor,
    /// Its line.
    pub dash: Dash,
    /// Its marker.
    pub marker: Marker,
    /// A real server: drawn outlined (hollow markers and bars).
    pub peer: bool,
    /// Its family.
    pub family: Family,
}

const DASHES: [Dash; 4] = [Dash::Solid, Dash::Dashed, Dash::Dotted, Dash::Long];
const MARKERS: [Marker; 5] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
    Marker::Cross,
];

/// The family of `model`.
pub fn family(model: &str) -> Family {
    lookup(model).0
}

fn lookup(model: &str) -> (Family, usize, (u8, u8, u8)) {
    for (fam, list) in [
        (Family::Blocking, BLOCKING),
        (Family::Readiness, READINESS),
        (Family::Signal, SIGNAL),
        (Family::Completion, COMPLETION),
        (Family::Hybrid, HYBRID),
    ] {
        if let Some(i) = list.iter().position(|(m, _)| *m == model) {
            return (fam, i, list[i].1);
        }
    }
    if let Some(i) = PEERS.iter().position(|(p, _)| model.starts_with(p)) {
        // Variants of one peer (apache-prefork, apache-event) differ by
        // dash and marker, chosen from the whole name.
        let n = model
            .bytes()
            .fold(i, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
        return (Family::Peer, n, PEERS[i].1);
    }
    let n = model
        .bytes()
        .fold(7usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
    (Family::Other, n, (0, 128, 128))
}

/// The style of `model`.
pub fn style(model: &str) -> Style {
    let (family, i, (r, g, b)) = lookup(model);
    Style {
        color: RGBColor(r, g, b),
        dash: DASHES[i % DASHES.len()],
        marker: MARKERS[i % MARKERS.len()],
        peer: family == Family::Peer,
        family,
    }
}

/// `models` grouped by family, in family order (the panels of a small
/// multiple), each group in the order given.
pub fn by_family(models: &[String]) -> Vec<(Family, Vec<String>)> {
    let mut out: Vec<(Family, Vec<String>)> = Vec::new();
    for f in Family::ALL {
        let ms: Vec<String> = models.iter().filter(|m| family(m) == f).cloned().collect();
        if !ms.is_empty() {
            out.push((f, ms));
        }
    }
    out
}

/// A light grey for the other families' curves behind a panel's own.
pub const CONTEXT: RGBColor = RGBColor(215, 215, 215);

/// Draws `pts` as a line in `s`'s colour and dash, `width` pixels wide.
pub fn line<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    color: RGBColor,
    dash: Dash,
    width: u32,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let st = color.stroke_width(width);
    let pts = pts.to_vec();
    match dash {
        Dash::Solid => {
            chart.draw_series(LineSeries::new(pts, st))?;
        }
        Dash::Dashed => {
            chart.draw_series(DashedLineSeries::new(pts, 8, 4, st))?;
        }
        Dash::Dotted => {
            chart.draw_series(DashedLineSeries::new(pts, 2, 3, st))?;
        }
        Dash::Long => {
            chart.draw_series(DashedLineSeries::new(pts, 14, 4, st))?;
        }
    }
    Ok(())
}

/// Draws a marker of `s` at each point: filled, or hollow when `hollow`
/// (or for a peer).
pub fn markers<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    pts: &[(f64, f64)],
    s: Style,
    size: i32,
    hollow: bool,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let st = if hollow || s.peer {
        s.color.stroke_width(2)
    } else {
        s.color.filled()
    };
    let p = pts.to_vec();
    match s.marker {
        Marker::Circle => {
            chart.draw_series(p.into_iter().map(|c| Circle::new(c, size, st)))?;
        }
        Marker::Square => {
            chart.draw_series(p.into_iter().map(|c| {
                EmptyElement::at(c) + Rectangle::new([(-size, -size), (size, size)], st)
            }))?;
        }
        Marker::Triangle => {
            chart.draw_series(p.into_iter().map(|c| TriangleMarker::new(c, size + 1, st)))?;
        }
        Marker::Diamond => {
            let k = size + 1;
            chart.draw_series(p.into_iter().map(|c| {
                let outline = vec![(0, -k), (k, 0), (0, k), (-k, 0), (0, -k)];
                EmptyElement::at(c)
                    + if hollow || s.peer {
                        PathElement::new(outline, st).into_dyn()
                    } else {
                        Polygon::new(outline, st).into_dyn()
                    }
            }))?;
        }
        Marker::Cross => {
            chart.draw_series(
                p.into_iter()
                    .map(|c| Cross::new(c, size, s.color.stroke_width(2))),
            )?;
        }
    }
    Ok(())
}

/// What a legend entry shows beside its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swatch {
    /// A short line with the model's dash and marker.
    Line,
    /// A small bar (filled, or outlined for a peer).
    Bar,
}

/// Draws a legend of `models` into `area` (a column right of the plot):
/// grouped by family, a heading per family; `extra` lines of explanation
/// follow in small grey type.
pub fn legend<DB>(
    area: &DrawingArea<DB, Shift>,
    models: &[String],
    swatch: Swatch,
    extra: &[&str],
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    let groups = by_family(models);
    let rows = models.len() + groups.len() + extra.len();
    // Shrink the line height to fit tall legends in short panels.
    let step = ((h as i32 - 16) / rows.max(1) as i32).clamp(11, 17);
    let font = if step < 14 { 11 } else { 13 };
    let mut y = 10;
    for (f, ms) in groups {
        area.draw(&Text::new(
            f.name().to_string(),
            (4, y),
            ("sans-serif", font)
                .into_font()
                .color(&RGBColor(90, 90, 90)),
        ))?;
        y += step;
        for m in ms {
            let s = style(&m);
            match swatch {
                Swatch::Line => {
                    let st = s.color.stroke_width(2);
                    let segs: Vec<(i32, i32)> = match s.dash {
                        Dash::Solid => vec![(8, 30)],
                        Dash::Dashed => vec![(8, 15), (19, 26)],
                        Dash::Dotted => vec![(8, 10), (14, 16), (20, 22), (26, 28)],
                        Dash::Long => vec![(8, 21), (25, 30)],
                    };
                    let cy = y + font / 2;
                    for (a, b) in segs {
                        area.draw(&PathElement::new(vec![(a, cy), (b, cy)], st))?;
                    }
                    let mst = if s.peer {
                        s.color.stroke_width(2)
                    } else {
                        s.color.filled()
                    };
                    let c = (19, cy);
                    match s.marker {
                        Marker::Circle => area.draw(&Circle::new(c, 4, mst))?,
                        Marker::Square => {
                            area.draw(&Rectangle::new([(15, cy - 4), (23, cy + 4)], mst))?
                        }
                        Marker::Triangle => area.draw(&TriangleMarker::new(c, 5, mst))?,
                        Marker::Diamond => area.draw(&Polygon::new(
                            vec![(19, cy - 5), (24, cy), (19, cy + 5), (14, cy)],
                            mst,
                        ))?,
                        Marker::Cross => area.draw(&Cross::new(c, 4, s.color.stroke_width(2)))?,
                    }
                }
                Swatch::Bar => {
                    let st = if s.peer {
                        s.color.stroke_width(2)
                    } else {
                        s.color.filled()
                    };
                    area.draw(&Rectangle::new([(10, y + 1), (26, y + font - 1)], st))?;
                }
            }
            area.draw(&Text::new(
                m.clone(),
                (36, y),
                ("sans-serif", font).into_font(),
            ))?;
            y += step;
        }
    }
    for line in extra {
        if y + step > h as i32 {
            break;
        }
        area.draw(&Text::new(
            line.to_string(),
            (4, y),
            ("sans-serif", 11).into_font().color(&RGBColor(90, 90, 90)),
        ))?;
        y += step.min(14);
    }
    let _ = w;
    Ok(())
}

/// Splits `root` into a plot area and a legend column `legend_w` wide.
pub fn with_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    legend_w: u32,
) -> (DrawingArea<DB, Shift>, DrawingArea<DB, Shift>) {
    let (w, _) = root.dim_in_pixel();
    root.split_horizontally(w.saturating_sub(legend_w))
}

/// Marks a generator-limited bar or point: a small black ▼ at (x, y).
pub fn gen_mark<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    at: &[(f64, f64)],
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart.draw_series(at.iter().map(|&c| {
        EmptyElement::at(c) + Polygon::new(vec![(-4, -10), (4, -10), (0, -3)], BLACK.filled())
    }))?;
    Ok(())
}

/// The legend line that explains [`gen_mark`].
pub const GEN_NOTE: &str = "▼ GEN: the generator was ≥ 90 %";
/// Its second line.
pub const GEN_NOTE2: &str = "   busy and may have set the pace";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_are_stable_and_distinct() {
        let models = [
            "iterative",
            "fork",
            "cgi",
            "prefork",
            "thread",
            "threadpool",
            "nonblocking",
            "select",
            "poll",
            "epoll",
            "mio",
            "oneshot",
            "sigio",
            "aio",
            "uring",
            "fpm",
            "swoole",
            "tokio",
            "monoio",
        ];
        assert_eq!(style("epoll"), style("epoll"));
        for (i, a) in models.iter().enumerate() {
            for b in &models[i + 1..] {
                let (sa, sb) = (style(a), style(b));
                assert!(
                    (sa.color, sa.dash, sa.marker) != (sb.color, sb.dash, sb.marker),
                    "{a} and {b} look alike"
                );
            }
        }
        assert_eq!(family("prefork"), Family::Blocking);
        assert_eq!(family("uring"), Family::Completion);
        assert!(style("apache-event").peer && style("nginx").peer);
        assert_eq!(family("brand-new"), Family::Other);
        for (m, _) in crate::models::KNOWN {
            assert_ne!(family(m), Family::Other, "{m} has no place in the palette");
        }
        let groups = by_family(&["epoll".into(), "fork".into(), "nginx".into()]);
        assert_eq!(
            groups.iter().map(|g| g.0).collect::<Vec<_>>(),
            [Family::Blocking, Family::Readiness, Family::Peer]
        );
    }
}
