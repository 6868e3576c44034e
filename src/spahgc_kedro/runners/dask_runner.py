"""DaskRunner: every Kedro node runs as a task on a Dask distributed cluster.

A node's task depends on the tasks of the nodes that make its inputs, so nodes that
do not depend on each other run on different workers at the same time. Persisted
datasets are loaded and saved by the workers themselves (every worker needs the same
paths); memory datasets travel between workers as Dask results.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kedro.runner import AbstractRunner

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from pluggy import PluginManager

SCHEDULER_ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"


class DaskNodeError(RuntimeError):
    """A node raised on a Dask worker; the worker's exception is the cause."""


class DaskRunner(AbstractRunner):
    """Runs each node as a Dask task on the scheduler at `client_args["address"]` or
    `$DASK_SCHEDULER_ADDRESS`, else on a local cluster started for the run.

    Node and dataset hooks registered in the project's `settings.HOOKS` run on the
    workers; plugin hooks (kedro-mlflow, ...) run only in this process, for the
    pipeline-level events, because they keep per-run state here.
    """

    def __init__(self, client_args: dict[str, Any] | None = None, is_async: bool = False):
        """`client_args` go to `distributed.Client`; `is_async` loads and saves a node's data in threads."""
        if importlib.util.find_spec("distributed") is None:
            raise ImportError(
                'DaskRunner needs Dask distributed, which is not installed: run pip install -e ".[dask]".'
            )
        super().__init__(is_async=is_async)
        self._client_args = dict(client_args or {})

    def _get_executor(self, max_workers: int) -> None:
        """No local executor: the Dask scheduler places the nodes."""
        return None

    def _run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
    ) -> None:
        """Submit every node with its upstream tasks as dependencies, then wait for all of them."""
        _reject_single_process_datasets(pipeline, catalog)
        with self._client() as client:
            self._submit_and_wait(client, pipeline, catalog, run_id)

    @contextmanager
    def _client(self) -> Iterator[Any]:
        import distributed

        args = dict(self._client_args)
        address = args.pop("address", None) or os.environ.get(SCHEDULER_ADDRESS_ENV)
        if address:
            with distributed.Client(address, **args) as client:
                self._logger.info(
                    "DaskRunner: running on the Dask scheduler at %s (%d workers now).", address, len(client.nthreads())
                )
                yield client
            return
        # one thread per worker process: the nodes are CPU-bound Python/torch code; scheduler and workers
        # listen on loopback only, and no dashboard is served: a run's own cluster is nobody else's business
        with distributed.LocalCluster(
            threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster:
            with distributed.Client(cluster, **args) as client:
                self._logger.info(
                    "DaskRunner: %s is not set, so a local Dask cluster with %d workers runs this pipeline "
                    "and is closed after it.",
                    SCHEDULER_ADDRESS_ENV,
                    len(client.nthreads()),
                )
                yield client

    def _submit_and_wait(self, client: Any, pipeline: Pipeline, catalog: CatalogProtocol, run_id: str | None) -> None:
        from distributed import as_completed
        from kedro.framework.project import PACKAGE_NAME

        token = uuid.uuid4().hex
        in_memory = {name for name in pipeline.datasets() if _is_memory(catalog, name)}
        # Future of every dataset a node may wait for: memory values, or None once a
        # persisted dataset is saved. Memory pipeline inputs (parameters too) are sent once.
        upstream: dict[str, Any] = {
            name: client.scatter([catalog.load(name)], hash=False)[0] for name in sorted(pipeline.inputs() & in_memory)
        }
        pending: dict[Any, Node] = {}
        for node in pipeline.nodes:
            datasets = {
                name: catalog.get(name, fallback_to_runtime_pattern=True)
                for name in (*node.inputs, *node.outputs, *node.confirms)
                if name not in in_memory
            }
            future = client.submit(
                _run_node,
                node,
                datasets,
                {name: upstream[name] for name in node.inputs if name in upstream},
                [name for name in node.outputs if name in in_memory],
                self._is_async,
                run_id,
                PACKAGE_NAME,
                key=f"{node.name}-node-{token}",
                pure=False,
            )
            pending[future] = node
            for name in node.outputs:
                upstream[name] = client.submit(_pick, future, name, key=f"{name}-dataset-{token}", pure=False)
        outputs = {name: upstream[name] for name in pipeline.outputs() & in_memory}
        # Dask keeps each result until the tasks that need it have run; holding only the
        # nodes' futures (dropped as they finish) and the pipeline's outputs frees the rest.
        del upstream

        done_nodes: list[Node] = []
        for future in as_completed(list(pending)):
            node = pending.pop(future)
            if future.status != "finished":
                self._fail(client, pipeline, catalog, done_nodes, pending, node, future)
            worker = next(iter(client.who_has(future).get(future.key, ())), "?")
            done_nodes.append(node)
            self._logger.info("Completed node: %s (on Dask worker %s)", node.name, worker)
            self._logger.info("Completed %d out of %d tasks", len(done_nodes), len(pipeline.nodes))
        for name, value in zip(outputs, client.gather(list(outputs.values())), strict=True):
            catalog.save(name, value)

    def _fail(
        self,
        client: Any,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        done_nodes: list[Node],
        pending: dict[Any, Node],
        node: Node,
        future: Any,
    ) -> None:
        """Stop the remaining nodes and raise naming the node whose own code failed."""
        # Nodes downstream of a failed node fail with its exception: report that node.
        futures = {n: f for f, n in pending.items()}
        parents = pipeline.node_dependencies
        failed = node
        while origin := next((p for p in parents[failed] if p in futures and futures[p].status == "error"), None):
            failed = origin
        client.cancel(list(pending))
        self._suggest_resume_scenario(pipeline, done_nodes, catalog)
        try:
            future.result()
        except Exception as error:
            raise DaskNodeError(
                f"Node '{failed.name}' failed on a Dask worker: {type(error).__name__}: {error}"
            ) from error


def _is_memory(catalog: CatalogProtocol, name: str) -> bool:
    """Whether a dataset lives in memory only (so it must travel between workers)."""
    return bool(getattr(catalog.get(name, fallback_to_runtime_pattern=True), "_EPHEMERAL", False))


def _reject_single_process_datasets(pipeline: Pipeline, catalog: CatalogProtocol) -> None:
    """Fail before any node for datasets that cannot leave this process (Spark, CachedDataset, ...)."""
    single = sorted(
        name
        for name in pipeline.datasets()
        if getattr(catalog.get(name, fallback_to_runtime_pattern=True), "_SINGLE_PROCESS", False)
    )
    if single:
        raise AttributeError(
            f"Datasets {single} work in one process only, so DaskRunner cannot pass them to workers: "
            "use SequentialRunner, or other dataset types."
        )


def _pick(outputs: dict[str, Any], name: str) -> Any:
    """One memory output of a node's task; None for an output the node saved itself."""
    return outputs.get(name)


def _run_node(  # noqa: PLR0913 - one task carries everything a node needs on the worker
    node: Node,
    datasets: dict[str, Any],
    upstream: dict[str, Any],
    memory_outputs: list[str],
    is_async: bool,
    run_id: str | None,
    package_name: str | None,
) -> dict[str, Any]:
    """On a worker: run the node like SequentialRunner would, return its memory outputs."""
    from distributed import get_worker
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner.task import Task

    # Persisted inputs arrive as None (their node saved them): `datasets` loads them.
    # Memory inputs copy on load, as with SequentialRunner: other tasks on this worker share them.
    memory = {name: MemoryDataset(value) for name, value in upstream.items() if name not in datasets}
    # The node made these objects on this worker and nothing else holds them: no copy.
    made = {name: MemoryDataset(copy_mode="assign") for name in memory_outputs}
    catalog = DataCatalog({**datasets, **memory, **made})
    try:
        hook_manager = _project_hooks(package_name)
        Task(node=node, catalog=catalog, is_async=is_async, hook_manager=hook_manager, run_id=run_id).execute()
    except Exception as error:
        error.add_note(f"Raised in Kedro node '{node.name}' on Dask worker {get_worker().address}.")
        raise
    return {name: catalog.load(name) for name in memory_outputs}


def _project_hooks(package_name: str | None) -> Any:
    """A hook manager with the project's own hooks, in a worker process."""
    from kedro.framework import project
    from kedro.framework.hooks.manager import _create_hook_manager, _register_hooks

    if package_name and project.PACKAGE_NAME != package_name:
        project.configure_project(package_name)
    hook_manager = _create_hook_manager()
    _register_hooks(hook_manager, project.settings.HOOKS)
    return hook_manager
