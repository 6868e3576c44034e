"""Progress bars on a terminal only, with log lines printed above them rather than through them."""

from __future__ import annotations

from typing import Any


def progress(iterable: Any = None, **options: Any) -> Any:
    """A tqdm bar, drawn only on a terminal or in a notebook (in a log file or CI every redraw would be text).

    While it is drawn, the console log handlers write through tqdm, which redraws the bar below each line.
    """
    from tqdm.auto import tqdm

    in_notebook = tqdm.__module__.startswith("tqdm.notebook")
    # tqdm's disable=None: off when the output is not a terminal
    options["disable"] = True if options.get("disable") else (False if in_notebook else None)
    bar = tqdm(iterable, **options)
    if not bar.disable and not in_notebook:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm(tqdm_class=type(bar))
        redirect.__enter__()
        close = bar.close

        def close_and_restore_logging() -> None:
            close()
            bar.close = close  # once: tqdm closes again on garbage collection
            redirect.__exit__(None, None, None)

        bar.close = close_and_restore_logging
    return bar
