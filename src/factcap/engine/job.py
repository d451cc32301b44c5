"""One captioning job: inputs in, one record per input out, run the same way everywhere.

``factcap caption``, the service's dataset jobs and ``factcap bench shapes run`` all build
a :class:`JobSpec` and run it with :class:`CaptionJob`:

1. ``CaptionJob(spec, config)`` checks everything that does not need a model, so a mistake
   costs no loading time: the options, every input name (:func:`~factcap.engine.open_source`
   plans them), and the output: its format, that it is not one of the inputs, that an
   existing output is only continued (``resume``) or replaced (``overwrite``), never both and
   never silently, that it can be written, and, when resuming, that the job's settings
   (styles, instruction, models, verification) are the ones the output was made with.
2. :meth:`CaptionJob.run` streams the inputs through the pipeline with the chosen executor
   into the sink, skipping the inputs the output already holds (the output is the ledger, see
   :mod:`factcap.engine.resume`), and returns a :class:`JobResult`.

The settings are kept beside the output (:func:`~factcap.engine.records.settings_path`) as
JSON, with the folder the job ran in (so relative ``source`` paths can be found later).

Example:
    >>> import tempfile
    >>> from factcap.config import load_config
    >>> from factcap.examples import example_paths
    >>> out = Path(tempfile.mkdtemp()) / "out.jsonl"
    >>> job = CaptionJob(JobSpec(inputs=[str(example_paths()[0])], output=out), load_config())
    >>> job.format, job.settings["styles"]
    ('jsonl', ['detailed'])
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap import __version__
from factcap.config import Config
from factcap.engine.records import output_format, read_settings, settings_path
from factcap.engine.resume import check_retry_failed, completed_ids
from factcap.engine.sinks import SINK_FORMATS, SINKS, open_sink, sink_format
from factcap.engine.sources import open_source
from factcap.errors import (
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    ConfigError,
    FactcapError,
    OutputError,
    UsageError,
    require,
)
from factcap.inputs import InputItem
from factcap.pipeline.plan import stage_list, stage_settings
from factcap.prompts.style import selectable
from factcap.schema import Record

EXECUTORS = ("local", "ray")


@dataclass
class JobSpec:
    """What to caption, where the records go, and how.

    ``inputs`` are what :func:`~factcap.engine.open_source` reads (paths, globs, shards,
    manifests, PIL images). ``format`` defaults from the output's name. ``styles`` and
    ``instruction`` default to the config's; ``workers`` too (local executor).
    ``item_filter`` may change or refuse each item before it is captioned (the service marks
    files outside its data root); ``before_write`` may change each record just before it is
    written (the service names images relative to its data root).
    """

    inputs: Sequence[Any]
    output: Path
    format: str | None = None
    shard_size: int | None = None
    resume: bool = False
    retry_failed: bool = False
    overwrite: bool = False
    styles: Sequence[str] | None = None
    instruction: str | None = None
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    image_column: str | None = None
    id_column: str | None = None
    split: str | None = None
    item_filter: Callable[[InputItem], InputItem] | None = None
    before_write: Callable[[Record], None] | None = None

    def __post_init__(self) -> None:
        self.output = Path(self.output)


@dataclass
class JobResult:
    """What a job did: records written by status, error types, inputs skipped because the
    output already held them, and how long it took: ``seconds`` running, and
    ``load_seconds`` before it, loading the models (set by the caller that loaded them)."""

    output: Path
    format: str
    written: int = 0
    ok: int = 0
    failed: int = 0
    error_types: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0

    def count(self, record: Record) -> None:
        """Count one written record."""
        self.written += 1
        if record.ok:
            self.ok += 1
        else:
            self.failed += 1
            self.error_types[record.error.type if record.error else "Error"] += 1

    @property
    def exit_code(self) -> int:
        """0 when every input written got an ok record and there was something to do, 1
        otherwise (documented in :mod:`factcap.errors`)."""
        nothing = self.written == 0 and self.skipped == 0
        return EXIT_ITEMS_FAILED if self.failed or nothing else EXIT_OK

    def summary(self) -> str:
        """One line for the terminal: the time includes loading the models, the rate does not.

        >>> result = JobResult(Path("out.jsonl"), "jsonl", 2, 2, seconds=1.0, load_seconds=6.5)
        >>> print(result.summary())  # doctest: +NORMALIZE_WHITESPACE
        2 images in 7.5 s (models loaded in 6.5 s, then 2.00 img/s, 0.50 s/img): 2 ok,
        0 errors -> out.jsonl
        """
        parts = [f"models loaded in {self.load_seconds:.1f} s"] if self.load_seconds > 0 else []
        if self.written and self.seconds > 0:
            per = self.seconds / self.written
            rate = f"{self.written / self.seconds:.2f} img/s, {per:.2f} s/img"
            parts.append(f"then {rate}" if parts else rate)
        timing = f" ({', '.join(parts)})" if parts else ""
        detail = ", ".join(f"{k}: {v}" for k, v in self.error_types.most_common())
        skipped = f", {self.skipped} skipped (already in the output)" if self.skipped else ""
        return (
            f"{self.written} images in {self.seconds + self.load_seconds:.1f} s{timing}: "
            f"{self.ok} ok, {self.failed} errors"
            + (f" ({detail})" if detail else "")
            + skipped
            + f" -> {self.output}"
        )


def job_settings(config: Config, spec: JobSpec) -> dict[str, Any]:
    """The settings that decide what a record holds; a resume must use the same ones. The
    config sections the stages declare (:func:`~factcap.pipeline.plan.stage_settings`) are
    listed only when they differ from their defaults, so the settings of jobs written before
    a section existed still match."""
    settings: dict[str, Any] = {
        "styles": list(spec.styles or config.styles),
        "instruction": spec.instruction or config.instruction,
        "models": config.pipeline_models(),
        "verify": config.verify.enabled,
    }
    for key in stage_settings():
        value = getattr(config, key)
        if value != type(value)():
            settings[key] = value.model_dump()
    return settings


def check_models_fit(config: Config, local: bool = True) -> None:
    """Refuse, before any model loads, what cannot load on this machine: a ``quantize``
    option without a CUDA GPU (:mod:`factcap.backends.quantize`), and (``local`` jobs with
    ``memory.check``) models that would not fit its memory in the configured mode and dtype,
    with the modes that would (:mod:`factcap.backends.footprint`). Ray's actors may run
    elsewhere: their memory is not checked here."""
    from factcap.backends.footprint import check_fits
    from factcap.backends.quantize import check_quantize

    slots = list(dict.fromkeys(s.model for s in stage_list(config) if s.model))
    check_quantize(config, slots)
    if local and config.memory.check:
        check_fits(config, slots, preset=config.preset)


def _infer_format(output: Path, given: str | None) -> str:
    if given is not None:
        if given not in SINKS:
            raise UsageError(f"unknown output format {given!r}; choose from {SINK_FORMATS}")
        return given
    if output.is_dir():
        try:
            return output_format(output)  # an existing output folder tells its format
        except FactcapError:  # an empty or foreign folder: the name must tell
            pass
    try:
        return sink_format(output)
    except ConfigError as err:
        raise UsageError(str(err)) from None


def has_output(path: Path) -> bool:
    """Whether ``path`` already holds something an output would replace."""
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() and path.stat().st_size > 0


def check_writable(path: Path, folder: bool) -> None:
    """Raise :class:`OutputError` unless ``path`` (a file, or a ``folder``) can be created or
    written: its parent made, a probe file created and removed in the folder it goes in."""
    if path.exists() and not (path.is_dir() if folder else path.is_file()):
        what = "a folder" if folder else "a regular file"
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise OutputError(f"{path} is {kind}; the output must be {what}")
    target = path if folder else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".factcap-probe-", dir=target)
        os.close(fd)
        os.unlink(probe)
        if path.is_file() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def refuse_input_as_output(inputs: Sequence[Any], output: Path, sharded: bool = False) -> None:
    """Raise :class:`UsageError` when ``output`` is one of ``inputs`` (or, for a sharded
    output that a later run would read back as input, inside an input folder)."""
    real = os.path.realpath(output)
    for entry in inputs:
        if not isinstance(entry, (str, Path)) or not os.path.exists(entry):
            continue
        named = os.path.realpath(entry)
        if named == real:
            raise UsageError(f"the output {output} is also an input: choose another -o")
        inside = real.startswith(named.rstrip(os.sep) + os.sep)
        if sharded and os.path.isdir(named) and inside:
            raise UsageError(
                f"the output folder {output} is inside the input folder {entry}: its shards "
                "would be read as inputs; choose an output outside it"
            )


class CaptionJob:
    """A checked :class:`JobSpec` for a config, ready to run (see the module docstring).

    Raises (all before any model loads):
        UsageError: conflicting options, an output that exists without ``resume`` /
            ``overwrite``, an output that is one of the inputs.
        ConfigError: a resume whose settings differ from the output's; an input that matches
            nothing or cannot be opened; a bad shard size.
        OutputError: an output that cannot be written.
        MissingDependency: the Ray executor without Ray installed.
    """

    def __init__(self, spec: JobSpec, config: Config):
        self.spec, self.config = spec, config
        if spec.resume and spec.overwrite:
            raise UsageError("--resume and --overwrite cannot be used together: choose one")
        if spec.executor not in EXECUTORS:
            raise UsageError(f"unknown executor {spec.executor!r}; choose from {EXECUTORS}")
        if spec.ray_address and spec.executor != "ray":
            raise UsageError("--ray-address needs --executor ray")
        if spec.executor == "ray":
            require("ray", "ray")
        if spec.executor == "ray" and config.memory.mode == "low":
            raise UsageError(
                "--memory low is for the local executor (Ray holds each model in its own "
                "actors: give each role the resources it needs instead)"
            )
        if spec.styles:
            choices = selectable(config.style_registry())
            unknown = [s for s in spec.styles if s not in choices]
            if unknown:
                raise ConfigError(f"unknown style(s) {unknown}; choose from {choices}")
        self.format = _infer_format(spec.output, spec.format)
        sharded = SINKS[self.format].sharded
        if not sharded and spec.shard_size is not None:
            shards = "/".join(f for f, c in SINKS.items() if c.sharded)
            raise UsageError(f"{self.format} output is one file: --shard-size is for {shards}")
        if spec.shard_size is not None and spec.shard_size < 1:
            raise UsageError(f"--shard-size must be at least 1, not {spec.shard_size}")
        if spec.retry_failed:
            check_retry_failed(self.format)
        self.resuming = spec.resume or spec.retry_failed
        self.settings = job_settings(config, spec)
        refuse_input_as_output(spec.inputs, spec.output, sharded=sharded)
        exists = has_output(spec.output)
        if exists and not (self.resuming or spec.overwrite):
            raise UsageError(
                f"{spec.output} exists: --resume continues it, --overwrite replaces it"
            )
        check_writable(spec.output, folder=sharded)
        if self.resuming and exists:
            self._check_same_settings()
        check_models_fit(config, local=spec.executor == "local")
        self.items = self.inputs()

    def inputs(self) -> Iterator[InputItem]:
        """A fresh stream of the job's input items (checked when called: a name that matches
        nothing raises here)."""
        spec = self.spec
        return open_source(
            spec.inputs, image_column=spec.image_column, id_column=spec.id_column, split=spec.split
        )

    def _check_same_settings(self) -> None:
        saved = read_settings(self.spec.output)
        if saved is None:
            return  # an output made before settings were kept: nothing to compare
        defaulted = stage_settings()
        differs = [
            f"{key}: {saved.get(key)!r} in the output, {value!r} now"
            for key, value in self.settings.items()
            if key in saved and saved[key] != value and key not in defaulted
        ] + [
            f"{key}: {saved.get(key, 'default')!r} in the output, "
            f"{self.settings.get(key, 'default')!r} now"
            for key in defaulted
            if saved.get(key) != self.settings.get(key)
        ]
        if differs:
            raise ConfigError(
                f"cannot resume {self.spec.output} with other settings ({'; '.join(differs)}):"
                " run with the same ones, or write to another output"
            )

    def _save_settings(self) -> None:
        path = settings_path(self.spec.output)
        data = {"factcap": __version__, **self.settings, "cwd": os.getcwd()}
        try:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as err:
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from None

    def _todo(
        self, done: set[str], result: JobResult, on_skip: Callable[[InputItem], None] | None
    ) -> Iterator[InputItem]:
        keep = self.spec.item_filter
        for item in self.items:
            if item.id in done:
                result.skipped += 1
                if on_skip is not None:
                    on_skip(item)
                continue
            yield keep(item) if keep else item

    def run(
        self,
        pipeline: Any,
        on_record: Callable[[Record], None] | None = None,
        on_skip: Callable[[InputItem], None] | None = None,
    ) -> JobResult:
        """Caption every input not yet in the output; ``on_record`` is called after each
        record is written (from the writer thread), ``on_skip`` for each input the output
        already holds (from the reading thread). Returns the counts.

        Raises:
            OutputError: the output could not be written (what was written is kept).
        """
        spec = self.spec
        result = JobResult(spec.output, self.format)
        done = (
            completed_ids(spec.output, self.format, spec.retry_failed) if self.resuming else set()
        )
        sink: Any = open_sink(
            spec.output,
            self.format,
            spec.shard_size,
            append=self.resuming,
            overwrite=spec.overwrite,
            caption_style=(spec.styles or self.config.styles)[0],
        )
        self._save_settings()
        if spec.before_write is not None:
            sink = _Rewriting(sink, spec.before_write)

        def written(record: Record) -> None:
            result.count(record)
            if on_record is not None:
                on_record(record)

        start = time.perf_counter()
        try:
            with sink:
                todo = self._todo(done, result, on_skip)
                if spec.executor == "ray":
                    from factcap.engine.ray_executor import run_ray_job

                    run_ray_job(
                        pipeline,
                        todo,
                        sink,
                        address=spec.ray_address,
                        styles=spec.styles,
                        instruction=spec.instruction,
                        on_record=written,
                    )
                elif self.config.memory.mode == "low":
                    from factcap.engine.stage_major import run_stage_major, stage_dir

                    run_stage_major(
                        pipeline,
                        todo,
                        sink,
                        work_dir=stage_dir(spec.output),
                        chunk=self.config.memory.chunk,
                        resume=self.resuming,
                        styles=spec.styles,
                        instruction=spec.instruction,
                        on_record=written,
                    )
                else:
                    from factcap.engine.executor import run_job

                    run_job(
                        pipeline,
                        todo,
                        sink,
                        workers=spec.workers or self.config.workers,
                        styles=spec.styles,
                        instruction=spec.instruction,
                        on_record=written,
                    )
        finally:
            result.seconds = time.perf_counter() - start
        return result


class _Rewriting:
    """A sink that lets ``rewrite`` change each record just before the real sink writes it."""

    def __init__(self, sink: Any, rewrite: Callable[[Record], None]):
        self.sink, self.rewrite = sink, rewrite

    def write(self, record: Record, item: InputItem | None = None) -> None:
        self.rewrite(record)
        self.sink.write(record, item)

    def __enter__(self) -> _Rewriting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.close()
