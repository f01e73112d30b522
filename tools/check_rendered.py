"""Check the rendered book as a reader sees it.

    python tools/check_rendered.py [--static] [--browser] [--screenshots DIR]
                                   [HTML_DIR]

HTML_DIR is a built book (default `_build/html`). For every chapter page
(the notebooks under `book/`) it checks, and prints one line per page:

- every code cell that draws (calls `plt.*`, `plot_*`, `image_grid`, ...)
  shows at least one image on the page, and every output image has a
  caption or a real alt text (not just its file name);
- no cell shows an error or a stderr block;
- a cell tagged `stored-results` shows the stored full-size run with its
  provenance line (`mtlbook.results.show`);
- every diagram (a Markdown image) has alt text and exists;
- formulas: pages load MathJax from the book itself (`_static/mathjax`), never
  from a CDN, and no `$...$` is left unconverted in the text.

`--static` skips the checks that need executed outputs (for the build of
`make test`, which does not execute notebooks). `--browser` also opens every
page in headless Chromium (served on a loopback port, no network) and checks
that MathJax typeset every formula (no raw `\\(`, `\\[` left), that no
code block scrolls sideways at a 1280 px window and that no image is broken;
`--screenshots DIR` saves a PNG of the top of each page there.
Exit status 1 when any check fails.
"""

import argparse
import functools
import http.server
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading

from bs4 import BeautifulSoup

ROOT = pathlib.Path(__file__).resolve().parents[1]
DRAWS = re.compile(
    r"\b(plt\.(subplots|figure|plot|imshow|bar|scatter)\(|plot_\w+\(|"
    r"image_grid\(|\.imshow\(|\.scatter\(|\.errorbar\(|\.fill_between\()"
)
IMAGE_FILE = re.compile(r"\.(png|svg|jpe?g|gif)$", re.I)


def chapters():
    return sorted(
        p for p in (ROOT / "book").rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts
    )


def top_level_code(source):
    """The source without the bodies of function and class definitions."""
    kept, inside = [], False
    for line in source.splitlines():
        if re.match(r"(def|class|async def) ", line):
            inside = True
            continue
        if inside and (not line.strip() or line[0] in " \t#)"):
            continue
        inside = False
        kept.append(line)
    return "\n".join(kept)


def draws(cell):
    return bool(DRAWS.search(top_level_code("".join(cell["source"]))))


def captioned(image):
    figure = image.find_parent("figure")
    if figure is not None:
        caption = figure.find("figcaption")
        if caption is not None and caption.get_text(strip=True):
            return True
    alt = (image.get("alt") or "").strip()
    return bool(alt) and not IMAGE_FILE.search(alt)


def check_page(notebook, html_dir, static):
    relative = notebook.relative_to(ROOT).with_suffix(".html")
    page = html_dir / relative
    if not page.is_file():
        return [f"page {relative} is missing"], {}
    soup = BeautifulSoup(page.read_text(), "html.parser")
    problems = []
    code_cells = [
        c for c in json.loads(notebook.read_text())["cells"]
        if c["cell_type"] == "code"
    ]
    html_cells = soup.select("div.cell")
    counts = {"figures": 0, "diagrams": 0, "formulas": 0}
    if len(html_cells) != len(code_cells):
        problems.append(
            f"{len(code_cells)} code cells but {len(html_cells)} on the page"
        )
    for index, (cell, html) in enumerate(zip(code_cells, html_cells)):
        outputs = html.select("div.cell_output")
        images = [i for o in outputs for i in o.find_all("img")]
        counts["figures"] += len(images)
        first = "".join(cell["source"]).splitlines()[:1]
        where = f"code cell {index} ({first[0][:50]!r})" if first else index
        if not static and draws(cell) and not images:
            problems.append(f"{where} draws but the page shows no image")
        tags = cell.get("metadata", {}).get("tags", [])
        if "stored-results" in tags:
            counts["stored"] = counts.get("stored", 0) + 1
            text = " ".join(o.get_text(" ", strip=True) for o in outputs)
            if not static and "Stored full-size run" not in text:
                problems.append(f"{where} shows no stored full-size run "
                                "(with its provenance)")
        for image in images:
            if not captioned(image):
                problems.append(f"{where}: figure without caption or alt text")
        for output in outputs:
            for block in output.select(".stderr, .traceback, .error"):
                text = block.get_text(" ", strip=True)[:80]
                problems.append(f"{where} shows an error/stderr: {text!r}")
    article = soup.select_one("article") or soup
    for image in article.find_all("img"):
        if image.find_parent("div", class_="cell_output"):
            continue
        src = image.get("src", "")
        if "colab-badge" in src or src.startswith("http"):
            continue
        counts["diagrams"] += 1
        if not (image.get("alt") or "").strip() or IMAGE_FILE.search(
            image.get("alt", "")
        ):
            problems.append(f"diagram {src} has no alt text")
        if not (page.parent / src).is_file():
            problems.append(f"diagram {src} is missing from the build")
    formulas = soup.select(".math")
    counts["formulas"] = len(formulas)
    scripts = [s.get("src", "") for s in soup.find_all("script")]
    mathjax = [s for s in scripts if "mathjax" in s.lower()]
    if formulas and not mathjax:
        problems.append("formulas but no MathJax script")
    for src in mathjax:
        if src.startswith(("http:", "https:", "//")):
            problems.append(f"MathJax loaded from the network: {src}")
        elif not (page.parent / src.split("?")[0]).is_file():
            problems.append(f"MathJax script {src} is missing from the build")
    for paragraph in article.find_all(["p", "li", "td"]):
        if paragraph.find_parent(["pre", "code"]) or paragraph.find(
            class_="math"
        ):
            continue
        text = paragraph.get_text(" ")
        if re.search(r"\$[^$\s][^$]*\\[a-zA-Z]+[^$]*\$", text):
            problems.append(f"unconverted $...$ math: {text.strip()[:60]!r}")
    return problems, counts


# Loaded by Chromium beside the book: opens one page in an iframe of a
# desktop width, waits for MathJax, measures, and writes JSON into its DOM.
HARNESS = """<!doctype html><html><body>
<iframe id="page" style="width:1280px;height:900px"></iframe>
<pre id="result">pending</pre>
<script>
const frame = document.getElementById("page");
frame.onload = () => setTimeout(() => {
  const doc = frame.contentDocument;
  const math = [...doc.querySelectorAll(".math")];
  const raw = math.filter(m => !m.querySelector("mjx-container"))
    .map(m => m.textContent.slice(0, 60));
  const scrolling = [...doc.querySelectorAll("div.cell div.highlight pre")]
    .filter(p => p.scrollWidth > p.clientWidth + 1)
    .map(p => p.textContent.split("\\n").reduce(
      (a, b) => (b.length > a.length ? b : a), "").slice(0, 60));
  const broken = [...doc.querySelectorAll("article img")]
    .filter(i => !i.src.startsWith("http") || i.src.includes("127.0.0.1"))
    .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
  document.getElementById("result").textContent = JSON.stringify(
    {formulas: math.length, raw, scrolling, broken});
}, 8000);
frame.src = decodeURIComponent(location.search.slice(1));
</script></body></html>"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/__check__.html"):
            body = HARNESS.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


def browser_check(pages, html_dir, screenshots):
    """Open pages in headless Chromium; return {page: [problems]}.

    Each page is served on a loopback port and opened at a 1280 px width:
    every formula must be typeset by the bundled MathJax, no code block may
    scroll sideways and no image may be broken.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit(
            "check_rendered --browser needs Chromium (Debian: "
            "apt-get install chromium)."
        )
    handler = functools.partial(_Handler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--virtual-time-budget=30000", "--window-size=1300,1600",
    ]
    results = {}
    try:
        with tempfile.TemporaryDirectory() as profile:
            for page in pages:
                url = f"http://127.0.0.1:{port}/{page.as_posix()}"
                command = [chromium, *flags, f"--user-data-dir={profile}"]
                dom = subprocess.run(
                    [*command, "--dump-dom",
                     f"http://127.0.0.1:{port}/__check__.html?/"
                     f"{page.as_posix()}"],
                    capture_output=True, text=True, timeout=180,
                ).stdout
                result = BeautifulSoup(dom, "html.parser").find(id="result")
                try:
                    measured = json.loads(result.get_text())
                except (AttributeError, ValueError):
                    results[page] = ["the page did not load in Chromium"]
                    continue
                problems = (
                    [f"formula not typeset: {t!r}" for t in measured["raw"]]
                    + [f"code scrolls sideways: {t!r}"
                       for t in measured["scrolling"]]
                    + [f"broken image: {s}" for s in measured["broken"]]
                )
                results[page] = problems
                if screenshots:
                    out = pathlib.Path(screenshots) / (
                        page.as_posix().replace("/", "_")[:-5] + ".png"
                    )
                    out.parent.mkdir(parents=True, exist_ok=True)
                    subprocess.run(
                        [*command, f"--screenshot={out}", url],
                        capture_output=True, timeout=180,
                    )
    finally:
        server.shutdown()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", nargs="?", default="_build/html")
    parser.add_argument("--static", action="store_true")
    parser.add_argument("--browser", action="store_true")
    parser.add_argument("--screenshots")
    args = parser.parse_args()
    html_dir = pathlib.Path(args.html_dir).resolve()
    failed = False
    rendered = {}
    for notebook in chapters():
        problems, counts = check_page(notebook, html_dir, args.static)
        rendered[notebook] = problems
        name = notebook.relative_to(ROOT / "book").with_suffix("")
        summary = ", ".join(f"{v} {k}" for k, v in counts.items())
        print(f"{'FAIL' if problems else 'ok  '} {name}: {summary}")
        for problem in problems:
            print(f"       {problem}")
        failed |= bool(problems)
    if args.browser or args.screenshots:
        pages = [
            n.relative_to(ROOT).with_suffix(".html") for n in chapters()
        ] + [pathlib.Path("book/intro.html")]
        for page, problems in browser_check(
            pages, html_dir, args.screenshots
        ).items():
            print(f"{'FAIL' if problems else 'ok  '} {page} in Chromium"
                  + ("" if problems else ": formulas typeset, code fits, "
                     "images load"))
            for problem in problems[:5]:
                print(f"       {problem}")
            failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
