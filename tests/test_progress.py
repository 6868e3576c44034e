"""Progress bars draw on a terminal only; log lines during a bar get lines of their own."""

from __future__ import annotations

import io
import logging
import sys

from spahgc_kedro.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_draw_on_a_terminal_and_stay_silent_in_a_log_file():
    log_file, terminal = io.StringIO(), Terminal()
    assert list(progress(range(3), file=log_file, desc="sections")) == [0, 1, 2]
    assert log_file.getvalue() == ""
    list(progress(range(3), file=terminal, desc="sections"))
    assert "sections: 100%" in terminal.getvalue()
    list(progress(range(3), file=terminal, desc="hidden", disable=True))
    assert "hidden" not in terminal.getvalue()


def test_a_log_line_during_a_bar_gets_a_line_of_its_own(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(sys.stderr)  # the console handler of conf/logging.yml
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with progress(total=4, desc="patches") as bar:
            bar.update(2)
            logging.getLogger("spahgc_kedro.test").warning("section A1 read")
            bar.update(2)
        assert handler in root.handlers  # the original handler is back once the bar closes
        logging.getLogger("spahgc_kedro.test").warning("after the bar")
    finally:
        root.removeHandler(handler)
    lines = terminal.getvalue().replace("\r", "\n").splitlines()
    assert "WARNING section A1 read" in lines and "WARNING after the bar" in lines  # not glued to a redraw
