"""The Ray executor: the same pipeline on Ray Data, each model role in its own actor pool.

``factcap caption ... --executor ray [--ray-address ADDR]`` runs :func:`run_ray_job`, the
counterpart of :func:`factcap.engine.executor.run_job`, as one streaming Ray Data job::

    driver: source ──► bounded queue actor ──► read task ──► decode tasks
        ──► one step per stage of :func:`factcap.pipeline.plan.stage_list`, in order
        ──► driver: the same sink (``sink.write(record, item)``)

- A stage that runs a model is an actor pool whose actors build that model in ``__init__``
  (:func:`factcap.backends.registry.build_configured`); models are never pickled. Each pool reserves
  the model's ``num_gpus`` / ``num_cpus`` per actor and has ``replicas`` actors (see
  :class:`factcap.config.RoleConfig`). A stage without a model runs as Ray tasks.
- Each step runs the stage's own function (``Stage.run``) on work items rebuilt from the
  columns of :meth:`Work.to_row` (the record as JSON, each view's RGB bytes, size, index and
  metadata, OCR spans, and what stages leave each other in ``Work.state``, plain JSON); a
  3D asset renders in the decode task. A backend that fails marks its batch's items as
  error records (the stage functions do that); the job goes on. The executor names no stage,
  no feature and no media kind.
- A Ray Data block is one pipeline batch (``batch_size`` consecutive inputs) at every stage,
  so each model sees the same batches as under the local executor and the records are the
  same (timings aside); records reach the driver in completion order unless
  ``preserve_order``.
- Memory is bounded: the driver hands the source to the cluster through a queue of at most
  ``depth`` batches, Ray Data's streaming execution applies backpressure between stages, and
  results stream back to the driver, which keeps only the items in flight (for the sink).
"""

from __future__ import annotations

import json
import os
import pickle
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from factcap.config import Config
from factcap.errors import ConfigError, require
from factcap.inputs import InputItem
from factcap.pipeline.stage import run_stage
from factcap.pipeline.work import Work, batched
from factcap.schema import Record

_FORWARDED_ENV = ("FACTCAP_", "HF_", "TRANSFORMERS_", "OPENAI_", "TOKENIZERS_")
#: CPUs reserved by each task of a stage that runs no model (e.g. ``check`` without VQA).
TASK_CPUS = 0.1


@dataclass(frozen=True)
class StagePlan:
    """One stage of the Ray job and what each of its workers reserves: an actor pool of
    ``replicas`` actors for a stage with a model, tasks for one without (``model`` None).
    ``num_cpus`` is resolved (never None) by :func:`plan`."""

    name: str
    model: str | None
    num_cpus: float
    num_gpus: float
    replicas: int


def plan(
    config: Config, cluster_cpus: float | None = None, decode_cpus: float = 1.0
) -> list[StagePlan]:
    """The stages of ``config``, in order, with the resources of each worker.

    A model whose ``num_cpus`` is unset gets 1 CPU per actor, or less when ``cluster_cpus``
    cannot hold one CPU for every such actor besides ``decode_cpus`` for decoding, the CPUs
    asked for explicitly and :data:`TASK_CPUS` per stage without a model: they then share
    what is left equally.

    Example:
        >>> from factcap.config import load_config
        >>> [s.name for s in plan(load_config(preset="tiny", overrides={"ocr": None}))]
        ['caption:0', 'caption:1', 'alt_text', 'claims', 'detect', 'check', 'compose']
        >>> sorted({s.num_cpus for s in plan(load_config(preset="tiny"), cluster_cpus=2)})
        [0.1, 0.128571]
    """
    from factcap.pipeline.plan import stage_list

    stages = stage_list(config)
    slots = config.model_slots()
    configs = [slots[s.model] if s.model else None for s in stages]
    share = 1.0
    auto = sum(rc.replicas for rc in configs if rc is not None and rc.num_cpus is None)
    if auto and cluster_cpus is not None:
        explicit = sum(
            rc.num_cpus * rc.replicas for rc in configs if rc is not None and rc.num_cpus
        )
        explicit += TASK_CPUS * configs.count(None)
        left = cluster_cpus - decode_cpus - explicit
        if left <= 0:
            raise ConfigError(
                f"the Ray cluster has {cluster_cpus:g} CPUs: nothing is left for the roles "
                f"without num_cpus after {explicit:g} asked for explicitly and {decode_cpus:g}"
                " for decoding"
            )
        share = min(1.0, int(left / auto * 1e6) / 1e6)  # rounded down, so the sum fits
    plans = []
    for stage, rc in zip(stages, configs, strict=True):
        if rc is None:
            plans.append(StagePlan(stage.name, None, TASK_CPUS, 0.0, 1))
            continue
        cpus = share if rc.num_cpus is None else rc.num_cpus
        plans.append(StagePlan(stage.name, stage.model, cpus, rc.num_gpus, rc.replicas))
    return plans


# --- work items <-> Arrow columns ------------------------------------------------------------


def _schemas() -> tuple[Any, Any, Any]:
    import pyarrow as pa

    feed = pa.schema([("seq", pa.int64()), ("item", pa.large_binary())])
    view = pa.struct(
        [
            ("pixels", pa.large_binary()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("index", pa.int64()),
            ("meta", pa.large_string()),
        ]
    )
    work = pa.schema(
        [
            ("seq", pa.int64()),
            ("record", pa.large_string()),
            ("views", pa.list_(view)),
            ("ocr", pa.large_string()),
            ("ocr_model", pa.string()),
            ("state", pa.large_string()),
        ]
    )
    result = pa.schema([("seq", pa.int64()), ("record", pa.large_string())])
    return feed, work, result


def work_table(seqs: Sequence[int], work: Sequence[Work], with_image: bool = True) -> Any:
    """Work items as an Arrow table (:meth:`Work.to_row`'s columns); ``with_image=False``
    keeps only ``seq`` and ``record``, what the driver needs once the last stage is done."""
    import pyarrow as pa

    _, work_schema, result_schema = _schemas()
    if with_image:
        rows = [{"seq": seq, **w.to_row()} for seq, w in zip(seqs, work, strict=True)]
    else:
        rows = [
            {"seq": seq, "record": json.dumps(w.record.to_dict())}
            for seq, w in zip(seqs, work, strict=True)
        ]
    return pa.Table.from_pylist(rows, schema=work_schema if with_image else result_schema)


def read_work(table: Any) -> tuple[list[int], list[Work]]:
    """The inverse of :func:`work_table`: sequence numbers and rebuilt work items."""
    rows = table.to_pylist()
    return [row["seq"] for row in rows], [Work.from_row(row) for row in rows]


# --- the stages (they run in Ray workers) ----------------------------------------------------


def feed_table(seqs: Sequence[int], items: Sequence[InputItem]) -> Any:
    """Input items as the Arrow table the decode stage reads: each pickled whole (a path,
    encoded bytes or an in-memory image; no model)."""
    import pyarrow as pa

    rows = [{"seq": seq, "item": pickle.dumps(item)} for seq, item in zip(seqs, items, strict=True)]
    return pa.Table.from_pylist(rows, schema=_schemas()[0])


def decode_stage(table: Any, config: Config) -> Any:
    """Task stage: decode a batch of fed items (``Pipeline.prepare``, no model)."""
    from factcap.pipeline.runner import Pipeline

    rows = table.to_pylist()
    pipeline = Pipeline(config, load_in_process=True)  # a Ray task is its own process already
    work = pipeline.prepare([pickle.loads(r["item"]) for r in rows])
    return work_table([r["seq"] for r in rows], work)


class StageWorker:
    """Runs one pipeline stage on the batches Ray Data hands it: as an actor for a stage with
    a model (built once, in ``__init__``, inside the actor), as a task otherwise.

    Example (in a Ray worker, as Ray Data does it; here in-process)::

        worker = StageWorker(config, "claims")
        table = worker(table)  # work columns in, work columns out
    """

    def __init__(
        self,
        config: Config,
        name: str,
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
        last: bool = False,
    ):
        from factcap.backends.registry import build_configured
        from factcap.pipeline.plan import stage_list
        from factcap.pipeline.stage import StageContext

        [self.stage] = [s for s in stage_list(config) if s.name == name]
        self.context = StageContext.of(config, styles, instruction)
        self.last = last
        self.model = build_configured(config, self.stage.model) if self.stage.model else None

    def __call__(self, table: Any) -> Any:
        seqs, work = read_work(table)
        run_stage(self.stage, work, self.model, self.context)
        return work_table(seqs, work, with_image=not self.last)


# --- feeding the source from the driver ------------------------------------------------------


def _feed_datasource(queue: Any) -> Any:
    """A Ray Data datasource with one read task that yields the batches the driver puts in
    ``queue`` (a ``ray.util.queue.Queue``) until it gets ``None``."""
    from ray.data import ReadTask
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource

    feed_schema, _, _ = _schemas()

    def read() -> Iterator[Any]:
        while (table := queue.get(block=True)) is not None:
            yield table

    class Feed(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            return [ReadTask(read, meta, schema=feed_schema)]

    return Feed()


def _init_ray(address: str | None) -> bool:
    """Connect to ``address`` (or start a local instance) unless Ray is up; True if started."""
    import ray

    if ray.is_initialized():
        return False
    # Ray's usage reporting stays off unless the user turned it on (it would reach the network)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
    ray.init(
        address=address,
        include_dashboard=False,
        runtime_env={"env_vars": env} if env else None,
        logging_level="WARNING",
    )
    return True


def _quiet_context(context: Any) -> dict[str, Any]:
    """Switch off Ray Data's own progress bars (callers report progress through
    ``on_record``), its start banner and its advisory issue detectors; returns what to
    restore."""
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")  # the "progress bars disabled" notice
    saved = {
        "enable_progress_bars": context.enable_progress_bars,
        "print_on_execution_start": context.print_on_execution_start,
        "preserve_order": context.execution_options.preserve_order,
        "detectors": list(context.issue_detectors_config.detectors),
    }
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.issue_detectors_config.detectors = []
    return saved


def _restore_context(context: Any, saved: dict[str, Any]) -> None:
    context.enable_progress_bars = saved["enable_progress_bars"]
    context.print_on_execution_start = saved["print_on_execution_start"]
    context.execution_options.preserve_order = saved["preserve_order"]
    context.issue_detectors_config.detectors = saved["detectors"]


def _check_fits(stages: Sequence[StagePlan], decode_cpus: float) -> None:
    import ray

    have = ray.cluster_resources()
    for unit, need in (
        ("CPU", decode_cpus + sum(s.num_cpus * s.replicas for s in stages)),
        ("GPU", sum(s.num_gpus * s.replicas for s in stages)),
    ):
        if need > have.get(unit, 0.0) + 1e-9:
            asked = ", ".join(
                f"{s.name}: {s.replicas} x {getattr(s, f'num_{unit.lower()}s'):g}" for s in stages
            )
            raise ConfigError(
                f"the roles ask for {need:g} {unit}s ({asked}; decoding {decode_cpus:g} CPU) but "
                f"the Ray cluster has {have.get(unit, 0.0):g}: lower num_{unit.lower()}s or "
                "replicas in the config"
            )


def run_ray_job(
    pipeline: Any,
    items: Iterable[InputItem],
    sink: Any,
    *,
    address: str | None = None,
    batch_size: int | None = None,
    depth: int = 2,
    styles: Sequence[str] | None = None,
    instruction: str | None = None,
    on_record: Callable[[Record], None] | None = None,
    decode_cpus: float = 1.0,
    preserve_order: bool = False,
) -> int:
    """Caption ``items`` into ``sink`` on Ray Data; returns how many records were written.

    Like :func:`factcap.engine.executor.run_job`: ``pipeline`` gives the config (its models
    are not used: each actor builds its own), ``on_record`` is called after each write.
    Connects to ``address``, or starts a local Ray instance, unless Ray is already
    initialised (then shut down again if this call started it).

    Raises:
        MissingDependency: Ray is not installed.
        ConfigError: the roles ask for more CPUs / GPUs than the cluster has.
    """
    require("ray", "ray")
    import ray
    from ray.data import DataContext
    from ray.util.queue import Full, Queue

    config: Config = pipeline.config
    size = batch_size or config.batch_size
    _prebuild_tiny(config)
    started = _init_ray(address)
    queue = saved = None
    try:
        stages = plan(config, ray.cluster_resources().get("CPU", 0.0), decode_cpus)
        _check_fits(stages, decode_cpus)
        context = DataContext.get_current()
        saved = _quiet_context(context)
        context.execution_options.preserve_order = preserve_order

        queue = Queue(maxsize=depth, actor_options={"num_cpus": 0})
        pending: dict[int, InputItem] = {}
        stop = threading.Event()
        failures: list[BaseException] = []

        def put(value: Any) -> bool:
            while not stop.is_set():
                try:
                    queue.put(value, block=True, timeout=0.2)
                    return True
                except Full:
                    continue
            return False

        def feed() -> None:
            seq = 0
            try:
                for batch in batched(items, size):
                    seqs = range(seq, seq + len(batch))
                    pending.update(zip(seqs, batch, strict=True))
                    seq += len(batch)
                    if not put(feed_table(seqs, batch)):
                        return
            except BaseException as err:  # raised in the caller once the rest is written
                failures.append(err)
            put(None)

        ds = _dataset(queue, config, stages, size, styles, instruction, decode_cpus)
        feeder = threading.Thread(target=feed, name="factcap-ray-feed", daemon=True)
        feeder.start()
        written = 0
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in table.to_pylist():
                    record = Record.from_dict(json.loads(row["record"]))
                    sink.write(record, pending.pop(row["seq"]))
                    written += 1
                    if on_record is not None:
                        on_record(record)
        finally:
            stop.set()
            feeder.join(timeout=5)
        if failures:
            raise failures[0]
        if pending:
            raise RuntimeError(
                f"{len(pending)} inputs went into the Ray job but came back without a record;"
                " run again with --resume to caption them"
            )
        return written
    finally:
        if saved is not None:
            _restore_context(context, saved)
        if queue is not None:
            queue.shutdown(force=True)
        if started:
            ray.shutdown()


def _dataset(
    queue: Any,
    config: Config,
    stages: Sequence[StagePlan],
    size: int,
    styles: Sequence[str] | None,
    instruction: str | None,
    decode_cpus: float,
) -> Any:
    """The Ray Data pipeline: the fed batches, decoded, then one step per stage (an actor
    pool for a stage with a model, tasks for one without)."""
    import ray
    from ray.data import ActorPoolStrategy

    ds = ray.data.read_datasource(_feed_datasource(queue), override_num_blocks=1, num_cpus=0)
    ds = ds.map_batches(
        decode_stage,
        batch_size=size,
        batch_format="pyarrow",
        fn_kwargs={"config": config},
        num_cpus=decode_cpus,
    )
    for n, stage in enumerate(stages):
        kwargs = {
            "config": config,
            "name": stage.name,
            "styles": styles,
            "instruction": instruction,
            "last": n == len(stages) - 1,
        }
        if stage.model is None:  # no model to keep loaded: plain tasks
            ds = ds.map_batches(
                _run_stage_task,
                batch_size=size,
                batch_format="pyarrow",
                fn_kwargs=kwargs,
                num_cpus=stage.num_cpus,
            )
            continue
        ds = ds.map_batches(
            StageWorker,
            batch_size=size,
            batch_format="pyarrow",
            fn_constructor_kwargs=kwargs,
            compute=ActorPoolStrategy(size=stage.replicas),
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus,
        )
    return ds


def _run_stage_task(table: Any, **kwargs: Any) -> Any:
    """Task form of :class:`StageWorker`, for a stage that runs no model."""
    return StageWorker(**kwargs)(table)


def _prebuild_tiny(config: Config) -> None:
    """Build the ``tiny:`` checkpoints once here, so that actors load them instead of racing
    to build the same directory."""
    from factcap.backends import registry

    for spec in dict.fromkeys(rc.model for rc in config.model_slots().values()):
        if registry.parse_spec(spec)[0] == "tiny":
            registry.locate(spec)
