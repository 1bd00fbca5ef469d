//! The reports: Markdown content, and the HTML opened in headless Chromium
//! (every chart's `<svg>` present with drawn content, and a non-empty
//! screenshot). Without `chromium` the browser part is skipped with a
//! message, unless CI=true.

mod util;

use std::process::Command;

use iomodels_suite::report;

const CHARTS: &[&str] = &[
    "chart-rps-http",
    "chart-latency-http",
    "chart-idle-http",
    "chart-cpu-http",
    "chart-instructions-http",
    "chart-rps-fcgi",
    "chart-latency-fcgi",
    "chart-idle-fcgi",
    "chart-cpu-fcgi",
    "chart-sweep-hello-http",
    "chart-capacity-hello-http",
];

/// The `<svg id=…>…</svg>` element with this id in `dom`.
fn svg_element<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<svg id=\"{id}\""))?;
    let len = dom[start..].find("</svg>")?;
    Some(&dom[start..start + len])
}

fn drawn(svg: &str) -> bool {
    let shapes = svg.matches("<rect").count()
        + svg.matches("<path").count()
        + svg.matches("<polyline").count();
    shapes >= 3 && svg.contains("<text")
}

#[test]
fn markdown_and_html_hold_every_chart() {
    let r = util::fixture();
    let md = report::markdown(&r);
    assert!(md.contains("| epoll | hello | http |"), "{md}");
    assert!(md.contains("How to read"));
    assert!(
        md.contains("## A/A check") && md.contains("Noise floor"),
        "{md}"
    );
    assert!(
        md.contains("## Instructions per request (valgrind)"),
        "{md}"
    );
    assert!(md.contains("cputime_adjust"), "the user/system note: {md}");
    assert!(
        !md.contains("/aa |"),
        "A/A copies stay out of the main table"
    );
    let html = report::html(&r).unwrap();
    for id in CHARTS {
        let svg = svg_element(&html, id).unwrap_or_else(|| panic!("no {id} in the HTML"));
        assert!(drawn(svg), "{id} is empty");
    }
    assert!(
        !html.contains("src=\"http"),
        "the HTML must be self-contained"
    );
}

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed (scripts/install-peers.sh installs it)"
        );
        eprintln!("skipping: chromium is not installed (scripts/install-peers.sh)");
    }
    found
}

fn headless(browser: &str, profile: &std::path::Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn chromium_renders_every_chart() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let html = report::write(&util::fixture(), dir.path()).unwrap();
    assert!(dir.path().join("report.md").exists());
    let url = format!("file://{}", html.display());

    let profile = tempfile::tempdir().unwrap();
    let out = headless(browser, profile.path())
        .args(["--dump-dom", &url])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("iomodels report"),
        "chromium printed no DOM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in CHARTS {
        let svg =
            svg_element(&dom, id).unwrap_or_else(|| panic!("{id} missing from the rendered DOM"));
        assert!(drawn(svg), "{id} rendered without content");
    }

    let png = dir.path().join("report.png");
    let profile = tempfile::tempdir().unwrap();
    let out = headless(browser, profile.path())
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,3000")
        .arg(&url)
        .output()
        .expect("run chromium");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG"),
        "screenshot is {} bytes",
        bytes.len()
    );
}

#[test]
fn peers_are_marked_and_set_beside_their_models() {
    let mut r = util::fixture();
    // apache-prefork: a copy of prefork's HTTP runs, as a peer.
    let copies: Vec<_> = r
        .runs
        .iter()
        .filter(|x| x.model == "prefork" && x.protocol == loadgen::Protocol::Http)
        .cloned()
        .map(|mut x| {
            x.model = "apache-prefork".into();
            x
        })
        .collect();
    r.runs.extend(copies);
    r.config.peers = vec!["apache-prefork".into()];
    let md = report::markdown(&r);
    assert!(md.contains("| _apache-prefork_ | hello | http |"), "{md}");
    assert!(
        md.contains("[peers/apache-prefork/](peers/apache-prefork/)"),
        "{md}"
    );
    assert!(
        md.contains("### Models and their real-world counterparts"),
        "{md}"
    );
    assert!(
        md.contains("| prefork | apache-prefork | hello | http |"),
        "{md}"
    );
    assert!(
        md.contains("| prefork | apache-prefork | new-conn | http |"),
        "{md}"
    );
    let html = report::html(&r).unwrap();
    assert!(html.contains("<td><i>apache-prefork</i></td>"));
    assert!(html.contains("<a href=\"peers/apache-prefork/\">"));
    for id in CHARTS {
        let svg = svg_element(&html, id).unwrap_or_else(|| panic!("no {id} in the HTML"));
        assert!(drawn(svg), "{id} is empty");
    }
}
