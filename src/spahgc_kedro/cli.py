"""Project CLI: `kedro run` that also accepts `key:value` runtime parameters.

Kedro 1.7 only parses `--params key=value`; our users (and the paper's docs) type
`--params dataset:alex`. This command is Kedro's own `run` with a params parser
that takes both forms, nested keys included (`train.epochs:5`), and with
`--pipeline NAME` treated as `--pipelines NAME` without a deprecation warning.
"""

from __future__ import annotations

import copy
import os
import re
import signal
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.cli.utils import split_string
from omegaconf import OmegaConf

from spahgc_kedro.errors import find_user_error
from spahgc_kedro.tracking import end_interrupted_runs

TRACEBACK_ENV = "SPAHGC_TRACEBACK"
# a key (or a dotted part of it) named like a credential
SECRET_NAME = re.compile(r"(^|[._])(token|secret|password|passwd|api_key|apikey|credentials?)($|[._])", re.I)


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
        if SECRET_NAME.search(key):
            # every parameter is logged to MLflow, where anyone with the store can read it
            raise click.BadParameter(
                f"'{key}' looks like a secret: parameters are logged to MLflow, so secrets never go in --params. "
                "Pass them through the environment (e.g. HF_TOKEN for Hugging Face downloads).",
                ctx=ctx,
                param=param,
            )
        dotlist.append(f"{key}={val.strip()}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(dotlist))


# node filters select part of a pipeline: with them, stages are never added
NODE_FILTERS = ("from_inputs", "to_outputs", "from_nodes", "to_nodes", "node_names", "tags", "namespaces")


def with_missing_stages(requested: list[str], kwargs: dict[str, Any]) -> list[str]:
    """`requested` preceded by the stages whose outputs it reads and that have not been made for these params.

    So `kedro run --pipeline=train` on a fresh clone runs ingestion, embedding and graph first.
    """
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.pipeline import Pipeline

    from spahgc_kedro.hooks import missing_inputs
    from spahgc_kedro.pipeline_registry import STAGES

    if not requested or any(kwargs.get(name) for name in NODE_FILTERS):
        return requested
    unknown = [name for name in requested if name not in pipelines]
    if unknown:
        return requested  # Kedro names the unknown pipeline itself
    with KedroSession.create(
        env=kwargs.get("env"), conf_source=kwargs.get("conf_source"), runtime_params=kwargs.get("params") or {}
    ) as session:
        catalog = session.load_context().catalog
        added: list[str] = []
        # walk back stage by stage: a stage added may itself read what an earlier one makes
        while True:
            chosen = [*added, *requested]
            missing = missing_inputs(sum((pipelines[name] for name in chosen), start=Pipeline([])), catalog)
            earlier = sorted({stage for stage in missing.values() if stage in STAGES and stage not in chosen})
            if not earlier:
                break
            first, last = min(STAGES.index(s) for s in earlier), max(STAGES.index(s) for s in earlier)
            added = sorted({*added, *(s for s in STAGES[first : last + 1] if s not in requested)}, key=STAGES.index)
    if added:
        click.secho(
            f"Their inputs are missing for these parameters, so these run first: {', '.join(added)}.", fg="cyan"
        )
    return [*added, *requested]


def _run(**kwargs: Any) -> Any:
    """Forward to Kedro's run, mapping `--pipeline` onto `--pipelines`, running missing upstream stages first;
    a user error ends in one short message."""
    pipeline = kwargs.pop("pipeline", None)
    if pipeline:
        if kwargs.get("pipelines"):
            raise click.UsageError("Use either --pipeline or --pipelines, not both.")
        kwargs["pipelines"] = [pipeline]
    previous_sigterm = signal.signal(signal.SIGTERM, _terminated)
    try:
        if kwargs.get("pipelines"):
            kwargs["pipelines"] = with_missing_stages(list(kwargs["pipelines"]), kwargs)
        return kedro_run.callback(pipeline=None, **kwargs)
    except KeyboardInterrupt:
        # MLflow's exit handler would otherwise record the interrupted runs FINISHED
        end_interrupted_runs("KILLED")
        raise click.ClickException("Interrupted: the MLflow runs of this run are marked KILLED.") from None
    except Exception as error:
        user_error = find_user_error(error)
        if user_error is None or os.environ.get(TRACEBACK_ENV):
            raise
        # what the user has to fix, not a traceback through Kedro's internals
        raise click.ClickException(f"{user_error}\n(set {TRACEBACK_ENV}=1 for the traceback)") from None
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler's kill, `kill PID`) ends the run like Ctrl-C."""
    raise KeyboardInterrupt


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
