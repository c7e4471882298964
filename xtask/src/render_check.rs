//! Does every Mermaid diagram and every chart of the built book render? Loads each HTML page
//! that has a diagram in headless Chromium, lets its scripts run, and counts the diagrams that
//! became an `<svg>`; loads every chart the book shows as an image and checks that Chromium
//! decoded it at its size.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Chromium to use: `$CHROME`, else the first of the usual names on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROME") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|candidate| candidate.is_file())
}

/// Flags for a headless run on a machine without network (see the env notes: without the
/// background-networking flags Chromium keeps trying to reach Google's servers).
fn chromium(chrome: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
        "--virtual-time-budget=20000",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// The DOM of `url` after its scripts ran (stdout), and Chromium's messages (stderr).
fn dump_dom(chrome: &Path, profile: &Path, url: &str) -> Result<std::process::Output> {
    chromium(chrome, profile)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .with_context(|| format!("running {}", chrome.display()))
}

/// What a page showed after its scripts ran.
#[derive(Debug)]
pub struct PageRender {
    pub page: PathBuf,
    pub diagrams: usize,
    pub rendered_svgs: usize,
    pub screenshot: PathBuf,
}

/// Checks every page of `html_dir` that holds a Mermaid diagram; screenshots go to
/// `shots_dir`. Fails if a diagram did not become an SVG or Mermaid reported a syntax error.
pub fn check_mermaid(html_dir: &Path, shots_dir: &Path) -> Result<Vec<PageRender>> {
    let chrome = find_chromium().context(
        "no Chromium found: install it (Debian: `apt-get install chromium`) or set CHROME=/path/to/chrome",
    )?;
    std::fs::create_dir_all(shots_dir)?;
    let profile = shots_dir.join("chromium-profile");
    let mut results = Vec::new();
    for page in html_pages(html_dir)? {
        let html = std::fs::read_to_string(&page)?;
        let diagrams = html.matches("<pre class=\"mermaid\">").count();
        if diagrams == 0 {
            continue;
        }
        let url = format!("file://{}", page.canonicalize()?.display());
        let out = dump_dom(&chrome, &profile, &url)?;
        let dom = String::from_utf8_lossy(&out.stdout);
        let rendered_svgs = dom.matches("aria-roledescription=").count();
        let rel = page.strip_prefix(html_dir).unwrap_or(&page).to_path_buf();
        if dom.contains("Syntax error in text") {
            bail!(
                "{}: Mermaid reports a syntax error in a diagram",
                rel.display()
            );
        }
        if rendered_svgs < diagrams {
            bail!(
                "{}: {diagrams} Mermaid diagram(s), but only {rendered_svgs} rendered as <svg> (chromium stderr: {})",
                rel.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        let screenshot = shots_dir.join(
            rel.with_extension("png")
                .to_string_lossy()
                .replace('/', "_"),
        );
        let shot = chromium(&chrome, &profile)
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg("--window-size=1400,1600")
            .arg(&url)
            .output()?;
        if !shot.status.success() {
            bail!("chromium could not take a screenshot of {}", rel.display());
        }
        results.push(PageRender {
            page: rel,
            diagrams,
            rendered_svgs,
            screenshot,
        });
    }
    if results.is_empty() {
        bail!(
            "no page of {} holds a Mermaid diagram: was the book built?",
            html_dir.display()
        );
    }
    Ok(results)
}

fn html_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut pages = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "html") && !path.ends_with("print.html")
            {
                pages.push(path);
            }
        }
    }
    pages.sort();
    Ok(pages)
}

/// What Chromium made of one chart image.
#[derive(Debug)]
pub struct ChartRender {
    pub chart: PathBuf,
    pub width: u32,
    pub height: u32,
}

/// Loads every chart of the built book (`<html_dir>/images/charts/*.svg`) as an `<img>` of one
/// page in headless Chromium; the page's script writes each image's decoded size into the DOM.
/// Fails when a chart did not decode (a malformed SVG gives width 0), or when a chart of
/// `expected` is missing from the built book. A screenshot of the page goes to `shots_dir`.
pub fn check_charts(
    html_dir: &Path,
    expected: &[&str],
    shots_dir: &Path,
) -> Result<Vec<ChartRender>> {
    let chrome = find_chromium().context(
        "no Chromium found: install it (Debian: `apt-get install chromium`) or set CHROME=/path/to/chrome",
    )?;
    let charts_dir = html_dir.join("images/charts");
    for name in expected {
        if !charts_dir.join(name).is_file() {
            bail!(
                "the built book has no images/charts/{name}: was the book built after `cargo xtask bench`?"
            );
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&charts_dir)
        .with_context(|| format!("reading {}", charts_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".svg"))
        .collect();
    names.sort();
    std::fs::create_dir_all(shots_dir)?;
    let page = charts_dir.join("render-check.html");
    let imgs: String = names
        .iter()
        .map(|n| format!("<img src=\"{n}\" style=\"width:600px\">\n"))
        .collect();
    std::fs::write(
        &page,
        format!(
            "<!doctype html><html><body style=\"background:#020617\">\n{imgs}<pre id=\"result\"></pre>\n\
             <script>window.addEventListener('load', () => {{\n\
             document.getElementById('result').textContent = [...document.images]\n\
             .map(i => 'chart ' + i.getAttribute('src') + ' ' + (i.complete ? i.naturalWidth : 0) + 'x' + (i.complete ? i.naturalHeight : 0))\n\
             .join('\\n');\n}});</script></body></html>\n"
        ),
    )?;
    let url = format!("file://{}", page.canonicalize()?.display());
    let profile = shots_dir.join("chromium-profile");
    let out = dump_dom(&chrome, &profile, &url)?;
    let dom = String::from_utf8_lossy(&out.stdout);
    let mut results = Vec::new();
    for name in &names {
        let prefix = format!("chart {name} ");
        // The first result shares its line with the `<pre>` tag: look inside lines.
        let size = dom
            .lines()
            .find_map(|l| l.find(prefix.as_str()).map(|at| &l[at + prefix.len()..]))
            .map(|rest| {
                rest.split(|c: char| c.is_whitespace() || c == '<')
                    .next()
                    .unwrap_or("")
            })
            .with_context(|| format!("Chromium reported nothing for chart {name}"))?;
        let (w, h) = size.split_once('x').unwrap_or(("0", "0"));
        let (width, height) = (w.trim().parse().unwrap_or(0), h.trim().parse().unwrap_or(0));
        if width == 0 || height == 0 {
            bail!("chart {name} did not render in Chromium (decoded size {width}×{height})");
        }
        results.push(ChartRender {
            chart: PathBuf::from("images/charts").join(name),
            width,
            height,
        });
    }
    let shot = chromium(&chrome, &profile)
        .arg(format!(
            "--screenshot={}",
            shots_dir.join("charts.png").display()
        ))
        .arg("--window-size=700,2400")
        .arg(&url)
        .output()?;
    std::fs::remove_file(&page).ok();
    if !shot.status.success() {
        bail!("chromium could not take a screenshot of the charts");
    }
    Ok(results)
}
