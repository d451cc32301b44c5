"""The local executor: order, bounded read-ahead, and failures that never hang or lose work."""

from __future__ import annotations

import functools
import threading
import time
from types import SimpleNamespace

import pytest

from factcap.engine.executor import run_job
from factcap.inputs import InputItem
from factcap.schema import Record


class StagePipeline:
    """The far side of the executor: prepare/finish with a per-batch delay and a failure hook."""

    def __init__(self, batch_size=4, delay=0.0, fail_on=None):
        self.config = SimpleNamespace(batch_size=batch_size)
        self.delay, self.fail_on = delay, fail_on
        self.threads: set[str] = set()

    def prepare(self, items):
        self.threads.add(threading.current_thread().name)
        return [Record(id=i.id, source=i.source) for i in items]

    def finish(self, work, styles=None, instruction=None):
        time.sleep(self.delay)
        if self.fail_on and any(r.id == self.fail_on for r in work):
            raise RuntimeError("model exploded")
        return work


class ListSink:
    def __init__(self, fail_after=None):
        self.records, self.fail_after = [], fail_after
        self.statuses: list[str] = []

    def write(self, record, item=None):
        if self.fail_after is not None and len(self.records) >= self.fail_after:
            raise OSError("disk full")
        assert item.id == record.id
        self.records.append(record.id)
        self.statuses.append(record.status)


def items(n, pulled=None):
    for i in range(n):
        if pulled is not None:
            pulled.append(i)
        yield InputItem(source=f"{i}.png", id=f"id{i:03d}")


def test_every_item_is_written_once_in_input_order():
    sink = ListSink()
    pipe = StagePipeline()
    assert run_job(pipe, items(23), sink) == 23
    assert sink.records == [f"id{i:03d}" for i in range(23)]
    assert pipe.threads == {"factcap-read"}  # decoding happens off the model thread


def test_read_ahead_is_bounded():
    pulled: list[int] = []
    sink = ListSink()
    seen_ahead = []

    class Watching(StagePipeline):
        def finish(self, work, styles=None, instruction=None):
            time.sleep(0.02)
            seen_ahead.append(len(pulled) - len(sink.records))
            return work

    run_job(Watching(batch_size=4), items(200, pulled), sink, depth=2)
    # at most: the batch in the model, `depth` prepared, `depth` finished, one being read
    assert max(seen_ahead) <= 4 * (1 + 2 + 2 + 1)
    assert len(sink.records) == 200


def test_a_model_failure_is_raised_after_earlier_batches_are_written():
    sink = ListSink()
    with pytest.raises(RuntimeError, match="model exploded"):
        run_job(StagePipeline(fail_on="id009"), items(20), sink)
    assert sink.records == [f"id{i:03d}" for i in range(8)]


def test_a_sink_failure_stops_the_job_without_hanging():
    with pytest.raises(OSError, match="disk full"):
        run_job(StagePipeline(), items(100), ListSink(fail_after=5))


def test_a_source_failure_is_raised():
    def broken():
        yield InputItem(source="a", id="a")
        raise ValueError("tar is corrupt")

    sink = ListSink()
    with pytest.raises(ValueError, match="tar is corrupt"):
        run_job(StagePipeline(batch_size=1), broken(), sink)
    assert sink.records == ["a"]


def test_two_workers_overlap_batches_but_never_share_a_model(photos):
    """Two batches in the model stages at once (one waits on a 'remote' captioner while the
    other runs the 'local' LLM), yet each model only ever runs one call at a time.

    The overlap is forced, not hoped for: the first LLM call (the first batch, past its
    captions) and the second captioner call (the other batch) wait for each other, so they
    are in flight together however fast the machine; with one batch at a time they never
    meet and the test fails. Each call then lasts a little, only so that a model used by
    two batches at once would more likely be caught."""
    from factcap.config import load_config
    from factcap.pipeline import Pipeline
    from factcap.pipeline.models import Models
    from scripted import ScriptedDetector, ScriptedLLM, ScriptedVQA

    active: dict[str, int] = {}
    calls: dict[str, int] = {}
    overlap = {"most_at_once": 0, "same_model_twice": False, "met": False}
    lock = threading.Lock()
    meet = threading.Barrier(2, timeout=60)  # generous: it is never expected to expire
    meeting = {("llm", 1), ("remote-captioner", 2)}

    def tracked(name, fn, seconds):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            with lock:
                active[name] = active.get(name, 0) + 1
                calls[name] = calls.get(name, 0) + 1
                overlap["same_model_twice"] |= active[name] > 1
                overlap["most_at_once"] = max(overlap["most_at_once"], sum(active.values()))
                waits = (name, calls[name]) in meeting
            if waits:
                meet.wait()  # both calls are active now (BrokenBarrierError if never)
                overlap["met"] = True
            time.sleep(seconds)
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    active[name] -= 1

        return call

    class SlowCaptioner:
        name = "remote-captioner"

        def caption(self, images, prompt=None):
            return tracked(self.name, lambda: ["A grey cat."] * len(images), 0.05)()

    llm = ScriptedLLM('[{"kind": "object", "text": "A cat.", "subject": "cat"}]', "A cat.")
    llm.chat = tracked("llm", llm.chat, 0.05)
    config = load_config(preset="tiny", overrides={"batch_size": 2})
    models = Models(
        config,
        built={
            "captioner:0": (SlowCaptioner(), 2),
            "llm": (llm, 2),
            "detector": (ScriptedDetector(["cat"]), 2),
            "vqa": (ScriptedVQA(lambda q: 0.9), 2),
        },
    )
    pipeline = Pipeline(config, models=models)
    sink = ListSink()
    inputs = [
        InputItem(source=f"<{i}>", id=f"id{i:03d}", image=photos[i % len(photos)])
        for i in range(12)
    ]
    assert run_job(pipeline, inputs, sink, workers=2) == 12
    assert sorted(sink.records) == [f"id{i:03d}" for i in range(12)]
    assert sink.statuses == ["ok"] * 12
    assert overlap["met"] and overlap["most_at_once"] == 2  # two batches in different stages
    assert not overlap["same_model_twice"]


def test_serialized_backends_keep_their_signatures():
    from factcap.backends.openai_compat import OpenAILLM
    from factcap.engine.executor import _Serialized
    from factcap.pipeline.claims import accepts_json_schema

    llm = _Serialized(OpenAILLM("m", base_url="http://127.0.0.1:9/v1", cache=False))
    assert llm.name == "openai:m"
    assert accepts_json_schema(llm)  # so claim extraction still asks for structured output
