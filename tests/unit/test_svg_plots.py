"""The report page's SVG plots (synth/publish/svg.py): well-formed, escaped, self-contained, deterministic, and
drawn to scale."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import numpy as np

from synth.publish import svg

HOSTILE = '</text><script>alert(1)</script><a href="https://x.example">$\\frac{1}{0}$'


def _parse(markup: str) -> ElementTree.Element:
    return ElementTree.fromstring(markup)


def test_nice_ticks_are_round_and_cover_the_range():
    assert svg.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(0.0, 37.0) == [0.0, 10.0, 20.0, 30.0, 40.0]
    ticks = svg.nice_ticks(-0.13, 0.87)
    assert ticks[0] <= -0.13 and ticks[-1] >= 0.87 and len(ticks) <= 8
    assert svg.nice_ticks(0.0, 0.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # an empty range still draws an axis
    assert svg.nice_ticks(float("nan"), 1.0)[0] == 0.0


def test_a_hostile_label_is_text_and_nothing_leaves_the_page():
    panel = svg.columns([HOSTILE, "b"], [("count", [3.0, 1.0], "#4c72b0")], "candidates")
    root = _parse(svg.figure([panel, svg.bars([HOSTILE], [2.0], "seconds")], HOSTILE))
    assert not [e for e in root.iter() if e.tag in ("script", "a") or any("href" in k for k in e.attrib)]
    assert root.get("aria-label") == HOSTILE and root.find("title").text == HOSTILE
    shown = [t.text for t in root.iter("text")]
    assert HOSTILE[: svg.LABEL_CHARS - 1] + "…" in shown  # a long label is cut where it is drawn ...
    assert any(t.text == f"{HOSTILE}: 2" for t in root.iter("title"))  # ... and kept whole in the bar's tooltip


def test_bars_are_drawn_to_scale_in_order():
    root = _parse(svg.figure([svg.bars(["load", "embed", "mine"], [1.0, 4.0, 2.0], "seconds", "{:.2f}s")], "t"))
    rects = root.findall(".//rect")
    widths = [float(r.get("width")) for r in rects]
    ys = [float(r.get("y")) for r in rects]
    assert ys == sorted(ys)  # top to bottom as given
    assert abs(widths[1] / widths[0] - 4.0) < 0.01 and abs(widths[2] / widths[0] - 2.0) < 0.01
    assert [t.text for t in root.iter("text")][:6] == ["load", "1.00s", "embed", "4.00s", "mine", "2.00s"]


def test_stacked_columns_add_up_and_the_histogram_is_a_density():
    layers = [("negative", [6.0, 2.0], "#4c72b0"), ("false_negative", [2.0, 0.0], "#c44e52")]
    root = _parse(svg.figure([svg.columns(["risk", "llm"], layers, "candidates")], "t"))
    first = [r for r in root.findall(".//rect") if float(r.get("x")) < 300 and float(r.get("width")) > 20]
    heights = sorted(float(r.get("height")) for r in first)
    assert abs(heights[1] / heights[0] - 3.0) < 0.01  # 6 stacked on 2
    assert {"negative", "false_negative"} <= {t.text for t in root.iter("text")}  # the legend

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.6, 0.1, 500), rng.normal(0.3, 0.1, 2000)
    series = [("negatives", neg, "#c44e52"), ("positives", pos, "#4c72b0")]
    markup = svg.figure([svg.histogram(series, "score")], "h")
    assert markup == svg.figure([svg.histogram(series, "score")], "h")  # same figures, same bytes
    root = _parse(markup)
    assert {"negatives (n=2000)", "positives (n=500)"} <= {t.text for t in root.iter("text")}
    bins = [r for r in root.findall(".//rect") if r.get("fill-opacity")]
    assert 40 <= len(bins) <= 80 + 2  # two series over 40 shared bins (empty bins are not drawn), + legend
    assert not re.search(r"\d\.\d{2,}", " ".join(f"{r.get('x')} {r.get('y')}" for r in bins))  # one decimal
