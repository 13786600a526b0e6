"""The bounds table (synth/core/limits.py): a variable that is set must be a finite number > 0, crossing a bound
is one line naming its variable, and the README's "Trust and limits" section lists every entry."""

from __future__ import annotations

import pytest

from synth.core.errors import UserError
from synth.core.limits import LIMITS, limit, over_limit
from tests.conftest import REPO


@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "0", "-3", "ten", "1e400"])
def test_a_setting_that_would_turn_a_bound_off_is_refused(monkeypatch, raw):
    monkeypatch.setenv("SYNTH_HUB_TIMEOUT", raw)
    with pytest.raises(UserError) as e:
        limit("hub_timeout")
    assert "SYNTH_HUB_TIMEOUT" in str(e.value) and "\n" not in str(e.value)


def test_whole_number_bounds_refuse_fractions_and_read_their_variable(monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_LINE_BYTES", "10.5")
    with pytest.raises(UserError, match="whole number"):
        limit("max_line_bytes")
    monkeypatch.setenv("SYNTH_MAX_LINE_BYTES", "4096")
    assert limit("max_line_bytes") == 4096
    monkeypatch.delenv("SYNTH_MAX_LINE_BYTES")
    assert limit("max_line_bytes") == LIMITS["max_line_bytes"].default


def test_crossing_a_bound_names_it_and_its_variable(monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_REPLY_BYTES", "1000")
    line = str(over_limit("max_reply_bytes", "http://127.0.0.1:1/v1", "400 MB"))
    assert line.startswith("http://127.0.0.1:1/v1: ") and "1,000 bytes" in line and "SYNTH_MAX_REPLY_BYTES" in line


def test_the_readme_lists_every_bound():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Trust and limits", 1)[1].split("\n### ", 1)[0]
    missing = [spec.env for spec in LIMITS.values() if f"`{spec.env}`" not in section]
    assert not missing, f"README 'Trust and limits' does not list {missing}"
