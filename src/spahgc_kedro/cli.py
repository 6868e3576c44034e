"""Project CLI: `kedro run` that also accepts `key:value` runtime parameters.

Kedro 1.7 only parses `--params key=value`; our users (and the paper's docs) type
`--params dataset:alex`. This command is Kedro's own `run` with a params parser
that takes both forms, nested keys included (`train.epochs:5`), and with
`--pipeline NAME` treated as `--pipelines NAME` without a deprecation warning.
"""

from __future__ import annotations

import copy
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.cli.utils import split_string
from omegaconf import OmegaConf


def parse_params(ctx: click.Context | None, param: Any, value: Any) -> dict[str, Any]:
    """Parse `k1:v1,k2.sub=v2` into a nested dict of typed values."""
    if isinstance(value, dict):
        return value
    dotlist = []
    for item in split_string(ctx, param, value):
        sep = "=" if "=" in item else ":"
        key, found, val = item.partition(sep)
        key = key.strip()
        if not found or not key:
            raise click.BadParameter(
                f"'{item}' is not a parameter: write key:value or key=value "
                "(e.g. --params dataset:alex,train.epochs:5)",
                ctx=ctx,
                param=param,
            )
        dotlist.append(f"{key}={val.strip()}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(dotlist))


def _run(**kwargs: Any) -> Any:
    """Forward to Kedro's run, mapping `--pipeline` onto `--pipelines`."""
    pipeline = kwargs.pop("pipeline", None)
    if pipeline:
        if kwargs.get("pipelines"):
            raise click.UsageError("Use either --pipeline or --pipelines, not both.")
        kwargs["pipelines"] = [pipeline]
    return kedro_run.callback(pipeline=None, **kwargs)


def _build_run_command() -> click.Command:
    command = copy.copy(kedro_run)
    command.callback = _run
    command.params = []
    for option in kedro_run.params:
        parsed = option
        if option.name in ("params", "runner_params"):
            parsed = copy.copy(option)
            parsed.callback = parse_params
        command.params.append(parsed)
    return command


@click.group(name="spahgc-kedro")
def cli() -> None:
    """Project commands for spahgc-kedro."""


cli.add_command(_build_run_command(), name="run")


from spahgc_kedro.download import download  # noqa: E402

cli.add_command(download)
