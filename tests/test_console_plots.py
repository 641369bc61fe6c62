"""The console's SVG plots: well-formed, accessible, escaped, safe under a strict CSP, readable colours."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from repo_service.console import plots
from repo_service.console.plots import histogram, progress

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '</title><script>alert("x")</script> & \'quotes\' \x00\x1b <!-- ]]>'
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def parsed(markup: str) -> ET.Element:
    root = ET.fromstring(markup)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def bars(root: ET.Element) -> list[ET.Element]:
    """The histogram's bars: every rect but the white background."""
    return [rect for rect in root.iter(f"{SVG}rect") if rect.get("fill") != "#ffffff"]


def check_accessible_and_csp_safe(root: ET.Element, title: str) -> str:
    """Its role, title and description as aria-labelledby names them; no script, style or event handler. The
    description."""
    assert root.get("role") == "img" and root.get("viewBox") == f"0 0 {plots.WIDTH} {plots.HEIGHT}"
    title_id, desc_id = root.get("aria-labelledby", "").split()
    [title_element] = [element for element in root if element.get("id") == title_id]
    [desc_element] = [element for element in root if element.get("id") == desc_id]
    assert (title_element.tag, desc_element.tag) == (f"{SVG}title", f"{SVG}desc")
    assert title_element.text == title
    for element in root.iter():
        assert element.tag not in (f"{SVG}script", f"{SVG}style", f"{SVG}foreignObject")
        assert "style" not in element.attrib and not any(name.startswith("on") for name in element.attrib)
        assert not any("javascript:" in value for value in element.attrib.values())
    return desc_element.text or ""


def points(count: int, total: int) -> list[tuple[datetime, int, int]]:
    return [(T0 + timedelta(minutes=10 * n), n * total // count, n * total // count * 9 // 10)
            for n in range(count + 1)]


def test_a_histogram_counts_values_into_equal_bins_and_says_its_median_and_95th_percentile() -> None:
    root = parsed(histogram([float(value) for value in range(100)], title="Download time", bins=10))
    description = check_accessible_and_csp_safe(root, "Download time")
    assert description == "Histogram of 100 values: median 49.5 s, 95th percentile 94 s, from 0 to 99 s."
    found = bars(root)
    assert len(found) == 10
    assert [rect.find(f"{SVG}title").text.rsplit(": ", 1)[1] for rect in found] == ["10"] * 10
    assert "seconds" in texts(root) and "count" in texts(root)
    assert {"0", "10"} <= set(texts(root))  # tick values on both axes


@pytest.mark.parametrize("bins", [1, 3, 20, 50])
def test_a_histogram_has_at_most_its_bins_and_every_value_in_one_of_them(bins: int) -> None:
    values = [1.5 ** n for n in range(30)]
    found = bars(parsed(histogram(values, title="t", bins=bins)))
    assert len(found) <= bins
    assert sum(int(rect.find(f"{SVG}title").text.rsplit(": ", 1)[1].replace(",", "")) for rect in found) == 30


def test_bins_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="bins"):
        histogram([1.0], title="t", bins=0)


def test_a_single_value_is_one_bar_and_values_that_are_not_numbers_are_left_out() -> None:
    root = parsed(histogram([42.0, float("nan"), float("inf")], title="Completion", unit="min"))
    description = check_accessible_and_csp_safe(root, "Completion")
    assert description == "Histogram of 1 value: median 42 min, 95th percentile 42 min, from 42 to 42 min."
    assert len(bars(root)) == 1 and "min" in texts(root)


def test_progress_draws_finished_and_succeeded_from_zero_to_the_total() -> None:
    root = parsed(progress(points(6, 1_200), 2_000, title="Rollout"))
    description = check_accessible_and_csp_safe(root, "Rollout")
    assert description == ("Progress over time: 1,200 of 2,000 jobs finished (60.0%), 1,080 succeeded, "
                           "from 2026-12-01 10:00 UTC to 2026-12-01 11:00 UTC.")
    finished, succeeded = root.iter(f"{SVG}polyline")
    assert finished.get("stroke") != succeeded.get("stroke") and succeeded.get("stroke-dasharray")
    xs = [float(pair.split(",")[0]) for pair in finished.get("points", "").split()]
    assert len(xs) == 7 and xs == sorted(xs)
    labels = texts(root)
    assert {"0", "2,000", "all 2,000", "10:00", "11:00", "time (UTC)", "jobs"} <= set(labels)
    assert "finished (1,200)" in labels and "succeeded (1,080)" in labels
    # the y axis reaches the total, not only the jobs finished so far
    ys = [float(pair.split(",")[1]) for pair in finished.get("points", "").split()]
    assert min(ys) > plots.TOP


def test_progress_of_one_point_and_of_several_days() -> None:
    one = parsed(progress([(T0, 1, 1)], 1, title="t"))
    assert [circle.get("cx") for circle in one.iter(f"{SVG}circle")] == [f"{(plots.LEFT + plots.WIDTH - plots.RIGHT) / 2:.1f}"] * 2
    days = parsed(progress([(T0, 0, 0), (T0 + timedelta(days=3), 5, 4)], 10, title="t"))
    assert "12-01 10:00" in texts(days) and "12-04 10:00" in texts(days)


@pytest.mark.parametrize("markup", [
    histogram([], title="Nothing"), histogram([float("nan")], title="Nothing"), progress([], 100, title="Nothing"),
])
def test_no_data_is_said_plainly(markup: str) -> None:
    root = parsed(markup)
    assert check_accessible_and_csp_safe(root, "Nothing") == "No data yet."
    assert "No data yet" in texts(root) and not bars(root) and root.find(f".//{SVG}polyline") is None


@pytest.mark.parametrize("draw", [
    lambda title: histogram([1.0, 2.0], title=title, unit=HOSTILE),
    lambda title: progress(points(3, 9), 10, title=title),
    lambda title: histogram([], title=title),
])
def test_a_hostile_title_and_unit_stay_text(draw) -> None:  # type: ignore[no-untyped-def]
    markup = draw(HOSTILE)
    root = parsed(markup)
    shown = HOSTILE.replace("\x00", "\ufffd").replace("\x1b", "\ufffd")
    check_accessible_and_csp_safe(root, shown)
    assert shown in texts(root)
    assert "<script" not in markup and root.find(f".//{SVG}script") is None


def contrast(colour: str) -> float:
    """WCAG 2.1 contrast ratio of a #rrggbb colour against white."""
    channels = [int(colour[index:index + 2], 16) / 255 for index in (1, 3, 5)]
    linear = [value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4 for value in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def test_every_colour_but_the_grid_passes_wcag_aa_against_white() -> None:
    markup = histogram([1.0, 2.0, 3.0], title="t") + progress(points(4, 8), 10, title="t")
    colours = set(re.findall(r'(?:fill|stroke)="(#[0-9a-f]{6})"', markup)) - {"#ffffff", plots.GRID}
    assert colours == {plots.INK, plots.BLUE, plots.GREEN}
    assert all(contrast(colour) >= 4.5 for colour in colours), {colour: contrast(colour) for colour in colours}


def test_two_plots_on_one_page_do_not_share_ids() -> None:
    first, second = (parsed(histogram([1.0, value], title="t")) for value in (2.0, 3.0))
    assert first.get("aria-labelledby") != second.get("aria-labelledby")
