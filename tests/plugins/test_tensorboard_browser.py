"""TensorBoard as a researcher sees it: a two-point sweep over prune.measure, served by TensorBoard
and opened in headless Chromium, checked on what its HParams, Scalars, Custom Scalars and Text
tabs render.

Chromium is driven through its DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON
messages ended by a NUL byte, commands on the browser's file descriptor 3, replies and events on
4), so nothing beyond the standard library is needed. TensorBoard's dashboards live in shadow
DOM, which ``--dump-dom`` leaves out; the scripts below read it in the page.

The tests skip where Chromium is not installed (``.ci/run`` installs Debian's ``chromium`` when
it runs as root with apt-get). ``FP_WRITE_DOCS_IMAGES=1`` also writes the HParams screenshot that
the README shows::

    FP_WRITE_DOCS_IMAGES=1 python -m pytest tests/plugins/test_tensorboard_browser.py
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from fp.tools.sweep import sweep
from fp_builtins.tensorboard.hparams import COMPARED, METRICS
from fp_builtins.tensorboard.layout import CHARTS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DOCS_IMAGE = REPO / "docs" / "images" / "tensorboard-hparams.png"
#: the browsers tried, in order, on PATH
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MEASURES = ("magnitude", "snip")
#: the quickstart cut down to seconds: 500 training digits, 3 epochs, a prune after each of the
#: first two (so every gradient-flow chart has two points per run)
EXPERIMENT = """include '{quickstart}'
data.train_per_class = 50      # images per class
data.test_per_class = 20       # images per class
train.epochs = 3               # epochs in all
train.batch_size = 16          # images per step
train.lr = 0.1
prune.rounds = 2               # prunes, after epochs 1 and 2
prune.samples = 128            # images scored per prune event
flow.compare = []              # no rank correlations: none is charted here
"""
#: seconds a page may take to show what a test waits for
PAGE_WAIT_S = 60
#: seconds TensorBoard may take to start and read both runs
SERVER_WAIT_S = 60


# --- the browser ----------------------------------------------------------------------------

class Chromium:
    """A headless Chromium driven over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, profile: Path) -> None:
        commands, self._to_browser = os.pipe()
        self._from_browser, replies = os.pipe()

        def pipe_on_3_and_4() -> None:  # in the child, before exec
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands, replies)]
            for fd, target in zip(high, (3, 4)):
                os.dup2(fd, target)  # inheritable, unlike the pipe's own descriptors
                os.close(fd)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--hide-scrollbars", "--no-first-run", "--mute-audio", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=pipe_on_3_and_4, close_fds=False, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(replies)
        self._ids = 0
        self._buffer = b""

    def send(self, method: str, session: str | None = None, **params: Any) -> dict:
        """Send one protocol command and return its result (events meanwhile are dropped)."""
        self._ids += 1
        message = {"id": self._ids, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._ids:
                if "error" in reply:
                    raise RuntimeError(f"Chromium refused {method}: {reply['error']}")
                return reply["result"]

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            readable, _, _ = select.select([self._from_browser], [], [], PAGE_WAIT_S)
            if not readable:
                raise RuntimeError(f"Chromium sent nothing for {PAGE_WAIT_S} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str, width: int, height: int) -> "Page":
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", session, url=url)
        return Page(self, session, target)

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own group: renderers go too
            self.process.wait()
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)


class Page:
    """One tab of the browser."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target

    def evaluate(self, script: str) -> Any:
        """The JSON value of a script run in the page (with the DEEP helpers in scope)."""
        reply = self.browser.send("Runtime.evaluate", self.session, returnByValue=True,
                                  expression=f"(() => {{{DEEP}\nreturn {script};\n}})()")
        if "exceptionDetails" in reply:
            raise RuntimeError(f"the page's script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, script: str, ready: Callable[[Any], bool]) -> Any:
        """Evaluate ``script`` until ``ready(value)`` holds or PAGE_WAIT_S pass; the last value
        either way, for the test's assertions to judge."""
        deadline = time.monotonic() + PAGE_WAIT_S
        while True:
            value = self.evaluate(script)
            if ready(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.25)

    def screenshot(self, width: float, height: float) -> bytes:
        """A PNG of the page's top-left ``width`` x ``height`` pixels."""
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = self.browser.send("Page.captureScreenshot", self.session, format="png", clip=clip)
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        self.browser.send("Target.closeTarget", targetId=self.target)


#: helpers every page script can use: querySelectorAll through every shadow root, the elements
#: the page lays out, read left to right, and a chart's lines: the series it plots and how many
#: of them it draws (one wholly outside the y range the chart scales to has an empty path)
DEEP = """
const deepAll = (selector, root = document) => {
  const found = [...root.querySelectorAll(selector)];
  for (const element of root.querySelectorAll("*")) {
    if (element.shadowRoot) found.push(...deepAll(selector, element.shadowRoot));
  }
  return found;
};
const laidOut = (element) => {
  const box = element.getBoundingClientRect();
  return box.width > 0 && box.height > 0;
};
const byLeft = (a, b) => a.getBoundingClientRect().left - b.getBoundingClientRect().left;
const text = (element) => element ? element.textContent.trim() : "";
const lines = (root) => {
  const paths = deepAll(".line-plot:not(.ghost) path.line", root);  // one per series plotted
  return {series: paths.length, drawn: paths.filter((path) => path.getAttribute("d")).length};
};
"""

#: the HParams table (a vaadin-grid): its header cells, and its rows' cells, as laid out; a
#: cell's content is slotted into the grid's own table row
HPARAMS_TABLE = """(() => {
  const header = deepAll(".table-header").filter(laidOut).sort(byLeft).map(text);
  const rows = new Map();
  for (const cell of deepAll(".table-cell").filter(laidOut)) {
    const slot = cell.parentElement && cell.parentElement.assignedSlot;
    const row = slot && slot.closest("tr");
    if (cell.classList.contains("table-header") || !row) continue;
    rows.set(row, [...(rows.get(row) || []), cell]);
  }
  const top = (row) => row.getBoundingClientRect().top;
  return {header, rows: [...rows.keys()].sort((a, b) => top(a) - top(b))
    .map((row) => rows.get(row).sort(byLeft).map(text))};
})()"""

#: the bottom right corner of the HParams table's cells: a screenshot of the page down to there
#: holds the whole table and the hparams ticked beside it
HPARAMS_CORNER = """(() => {
  const boxes = deepAll(".table-cell").filter(laidOut).map((cell) => cell.getBoundingClientRect());
  return {right: Math.max(...boxes.map((box) => box.right)),
          bottom: Math.max(...boxes.map((box) => box.bottom))};
})()"""

#: the run selector's runs (ticked or not), the category headings and the scalar cards
SCALARS_PAGE = """(() => ({
  runs: deepAll(".name-row").map((row) => ({
    name: text(row.querySelector(".item-label-container")),
    ticked: Boolean((row.querySelector("paper-checkbox") || {}).checked),
  })),
  categories: deepAll(".category-name").map(text),
  cards: deepAll("tf-scalar-card").map((card) => ({
    title: text(deepAll(".heading-label.name", card.shadowRoot)[0]),
    ...lines(card.shadowRoot),
  })),
}))()"""

#: the Custom Scalars charts: title, the lines drawn, and the legend of matched (tag, run)s
CUSTOM_SCALARS_PAGE = """(() => deepAll("tf-custom-scalar-multi-line-chart-card").map((card) => ({
  title: text(deepAll(".heading-label.name", card.shadowRoot)[0]),
  ...lines(card.shadowRoot),
  matches: deepAll(".match-list-entry", card.shadowRoot).map(
    (entry) => text(entry).replace(/^[^\\w]+/, "")),
})))()"""

#: the Text tab's cards: the run each belongs to and its preformatted text
TEXT_PAGE = """(() => deepAll("tf-text-loader").map((card) => ({
  run: text(deepAll("#heading-run", card.shadowRoot)[0]),
  text: deepAll("pre", card.shadowRoot).map(text).join("\\n"),
})))()"""


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium_binary() -> str:
    found = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if found is None:
        pytest.skip("Chromium is not installed (none of " + ", ".join(CHROMIUM) + " on PATH); "
                    ".ci/run installs Debian's chromium when it runs as root with apt-get, or "
                    "install it with: apt-get install chromium")
    return found


@pytest.fixture(scope="module")
def swept_runs(chromium_binary, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A sweep folder of two runs that differ in prune.measure: (folder, {run name: measure})."""
    root = tmp_path_factory.mktemp("tensorboard_browser")
    config = root / "quickstart_tiny.gin"
    config.write_text(EXPERIMENT.format(quickstart=REPO / "gin" / "quickstart.gin"))
    folder = root / "sweep"
    rows = sweep(config, [f"prune.measure={','.join(MEASURES)}"], out=folder)
    assert [row["status"] for row in rows] == ["done", "done"], [row["error"] for row in rows]
    return folder, {row["name"]: measure for row, measure in zip(rows, MEASURES)}


@pytest.fixture(scope="module")
def tensorboard_url(swept_runs) -> Iterator[str]:
    """TensorBoard serving the sweep folder on 127.0.0.1, started once both runs are read."""
    folder, runs = swept_runs
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(folder), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_read(url, set(runs), server)
        yield url
    finally:  # its own process group: the data server it may start goes with it
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def browser(chromium_binary, tmp_path_factory) -> Iterator[Chromium]:
    chromium = Chromium(chromium_binary, tmp_path_factory.mktemp("chromium_profile"))
    try:
        yield chromium
    finally:
        chromium.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_read(url: str, runs: set[str], server: subprocess.Popen) -> None:
    """Wait until TensorBoard lists both runs and the plugins the tests open (the page asks
    once when it loads, so it must not come before the data)."""
    deadline = time.monotonic() + SERVER_WAIT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"TensorBoard exited: {server.stderr.read().decode()[-2000:]}")
        try:
            listed = set(fetch_json(url + "data/runs"))
            plugins = fetch_json(url + "data/plugins_listing")
        except OSError:
            listed, plugins = set(), {}
        active = {name for name, plugin in plugins.items() if plugin.get("enabled")}
        if runs <= listed and {"hparams", "custom_scalars", "scalars", "text"} <= active:
            return
        time.sleep(0.5)
    raise RuntimeError(f"TensorBoard did not read both runs within {SERVER_WAIT_S} s")


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def open_tab(browser: Chromium, url: str, tab: str, *, width: int = 1600,
             height: int = 900) -> Page:
    return browser.open(f"{url}#{tab}", width=width, height=height)


# --- the tabs -------------------------------------------------------------------------------

def test_the_hparams_table_shows_the_compared_settings_beside_the_metrics(
        browser, tensorboard_url, swept_runs, tmp_path):
    _, runs = swept_runs
    # wide enough for all eleven columns beside the pane of hparams to tick
    page = open_tab(browser, tensorboard_url, "hparams", width=2200, height=400)
    try:
        table = page.wait_for(HPARAMS_TABLE, lambda t: t and len(t["rows"]) == len(runs) and all(
            len(row) == len(t["header"]) and all(row[-len(METRICS):]) for row in t["rows"]))
        corner = page.evaluate(HPARAMS_CORNER)
        image = page.screenshot(corner["right"] + 16, corner["bottom"] + 12)
    finally:
        page.close()
    header, rows = table["header"], table["rows"]
    assert header[:2] == ["Trial ID", "Show Metrics"]
    assert sorted(header[2:-len(METRICS)]) == sorted(COMPARED), header  # the five, no other
    assert header[-len(METRICS):] == list(METRICS.values())
    assert sorted(row[0] for row in rows) == sorted(runs)
    for row in rows:
        cells = dict(zip(header, row))
        assert cells["prune.measure"] == runs[cells["Trial ID"]]
        assert cells["model.architecture"] == "small_cnn" and cells["data.dataset"] == "digits"
        assert float(cells["prune.target"]) == 0.5 and float(cells["experiment.seed"]) == 0
        assert all(0 < float(cells[title]) <= 1 for title in METRICS.values()), cells
    assert image.startswith(b"\x89PNG")
    (tmp_path / DOCS_IMAGE.name).write_bytes(image)
    if os.environ.get("FP_WRITE_DOCS_IMAGES") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMAGE.write_bytes(image)


def test_the_scalars_tab_lists_both_runs_and_plots_each_tag(browser, tensorboard_url, swept_runs):
    _, runs = swept_runs
    flow_tags = [tag for charts in CHARTS.values() for tags in charts.values() for tag in tags
                 if tag.startswith("flow/")]

    def plotted(shown):  # flow tag -> (series its card plots, whether it draws any)
        cards = {card["title"]: card for card in shown["cards"]} if shown else {}
        return {tag: (cards[tag]["series"], cards[tag]["drawn"] > 0) if tag in cards else None
                for tag in flow_tags}

    expected = dict.fromkeys(flow_tags, (len(runs), True))  # a line per run on each card
    page = open_tab(browser, tensorboard_url, "scalars")
    try:
        shown = page.wait_for(SCALARS_PAGE, lambda s: plotted(s) == expected)
    finally:
        page.close()
    assert {run["name"]: run["ticked"] for run in shown["runs"]} == dict.fromkeys(runs, True)
    assert {"flow", "layer", "model", "prune", "test", "train"} <= set(shown["categories"])
    assert plotted(shown) == expected


def test_the_custom_scalars_tab_draws_each_comparison_on_one_chart(browser, tensorboard_url,
                                                                   swept_runs):
    _, runs = swept_runs
    expected = {title: tags for charts in CHARTS.values() for title, tags in charts.items()}
    page = open_tab(browser, tensorboard_url, "custom_scalars", height=2000)  # every chart in view
    try:
        charts = page.wait_for(CUSTOM_SCALARS_PAGE, lambda cards: cards and len(cards) == len(
            expected) and all(card["series"] == 2 * len(runs) and card["drawn"] for card in cards))
    finally:
        page.close()
    assert [chart["title"] for chart in charts] == list(expected)
    for chart in charts:
        # one line per tag and run: the quantities compared share the chart
        assert chart["series"] == 2 * len(runs) and chart["drawn"] > 0, chart
        assert sorted(chart["matches"]) == sorted(
            f"{tag} ({run})" for tag in expected[chart["title"]] for run in runs), chart


def test_the_text_tab_shows_each_runs_operative_config(browser, tensorboard_url, swept_runs):
    _, runs = swept_runs
    page = open_tab(browser, tensorboard_url, "text")
    try:
        cards = page.wait_for(TEXT_PAGE, lambda cards: cards and len(cards) == len(runs) and all(
            "prune.measure" in card["text"] for card in cards))
    finally:
        page.close()
    assert sorted(card["run"] for card in cards) == sorted(runs)
    for card in cards:
        measure = runs[card["run"]]
        assert re.search(rf"^prune\.measure = '{measure}'$", card["text"], re.M), card["text"][:500]
        assert re.search(r"^train\.epochs = 3$", card["text"], re.M)
