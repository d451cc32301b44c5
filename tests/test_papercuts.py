"""What a new user met on the command line (issue 25, item 5): what ``factcap caption``
prints before and after its work and how its progress bar counts, the links ``study serve``
prints, and a service log without the libraries' loading bars."""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from pathlib import Path

import pytest
from PIL import Image

from factcap.cli import main
from factcap.engine.sources import count_items, open_source
from test_serve import WAIT_S, scripted_pipeline

# ---- factcap serve -----------------------------------------------------------------------------


@pytest.fixture
def loud_transformers(monkeypatch):
    """transformers as a fresh process has it: progress bars on (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    with warnings.catch_warnings():  # the hub's own switch may have been read as "off" already
        warnings.simplefilter("ignore", UserWarning)
        hf_logging.enable_progress_bar()
    yield hf_logging
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    hf_logging.set_verbosity(verbosity)


def test_the_service_log_has_no_loading_weights_bars(loud_transformers, monkeypatch, capsys):
    def serve(host, port, **options):  # where the models load: the bar transformers draws
        for _ in loud_transformers.tqdm(range(3), desc="Loading weights"):
            pass

    monkeypatch.setattr("factcap.serve.app.run", serve)
    assert main(["serve", "--port", "8123"]) == 0
    assert "Loading weights" not in capsys.readouterr().err
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # for the hub's download bars too


# ---- factcap study serve -----------------------------------------------------------------------


def test_study_serve_prints_the_admin_and_rater_links(tmp_path, monkeypatch, capsys):
    from factcap.study.store import StudyStore
    from test_study_server import make_study

    study = make_study(tmp_path, raters=3)
    served = {}
    monkeypatch.setattr(
        "factcap.study.server.run", lambda study_dir, **options: served.update(options)
    )
    monkeypatch.setenv("FACTCAP_API_KEY", "not-printed-key")
    assert main(["study", "serve", str(study), "--port", "8311"]) == 0
    err = capsys.readouterr().err
    assert served == {"host": "127.0.0.1", "port": 8311, "api_key": "not-printed-key"}
    assert f"serving study {study} at http://127.0.0.1:8311" in err
    assert "admin: http://127.0.0.1:8311/admin?key=<your API key>" in err
    raters = StudyStore.open(study).raters()
    assert len(raters) == 3
    for rater in raters:
        assert f"  {rater.label}: http://127.0.0.1:8311/r/{rater.token}\n" in err
    assert "not-printed-key" not in err


def test_study_serve_refused_on_a_public_host_prints_no_link(tmp_path, monkeypatch, capsys):
    from test_study_server import make_study

    study = make_study(tmp_path)
    monkeypatch.delenv("FACTCAP_API_KEY", raising=False)
    monkeypatch.setattr("factcap.study.server.run", lambda *a, **k: pytest.fail("served"))
    assert main(["study", "serve", str(study), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "/r/" not in err and err.count("\n") == 1


# ---- factcap caption -----------------------------------------------------------------------------


def _photos(folder: Path, n: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.new("RGB", (24 + i, 20), (40 * i % 256, 90, 200)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def scripted_models(monkeypatch):
    """``factcap caption`` with scripted models (no weights to load); their ``load`` waits for
    the count of the inputs, so that the bar's total is known before the first record."""

    def pipeline(config):
        pipe = scripted_pipeline()
        load = pipe.load

        def counted_then_load():
            for thread in threading.enumerate():
                if thread.name == "factcap-count":
                    thread.join(WAIT_S)
            return load()

        pipe.load = counted_then_load
        return pipe

    monkeypatch.setattr("factcap.pipeline.Pipeline", pipeline)


def _bar_states(err: str) -> list[str]:
    return [s.strip() for s in re.split(r"[\r\n]", err) if s.strip().startswith("captioning")]


def test_caption_says_what_it_loads_and_the_bar_has_a_total_from_the_start(
    scripted_models, tmp_path, capsys
):
    photos = _photos(tmp_path / "photos", 3)
    out = tmp_path / "out.jsonl"
    assert main(["caption", str(photos), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("factcap: loading the models of preset tiny ...\n")
    states = _bar_states(err)
    loading = next(i for i, s in enumerate(states) if s.endswith("loading models]"))
    first = next(i for i, s in enumerate(states) if re.search(r" [123]/3 ", s))
    assert loading < first  # the bar was up, saying why, before any record
    assert any("0/3" in s and s.endswith("captioning the first batch]") for s in states)
    assert "3/3" in states[-1] and "first batch" not in states[-1]
    summary = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"factcap: 3 images in (\d+\.\d) s \(models loaded in (\d+\.\d) s, then "
        r"[\d.]+ img/s, [\d.]+ s/img\): 3 ok, 0 errors -> .*out\.jsonl",
        summary,
    ), summary
    whole, loaded = map(float, re.findall(r"in (\d+\.\d) s", summary))
    assert whole >= loaded  # the whole time includes the loading


def test_a_resumed_caption_counts_what_the_output_held_on_its_bar(
    scripted_models, tmp_path, capsys
):
    photos = _photos(tmp_path / "photos", 3)
    out = tmp_path / "out.jsonl"
    assert main(["caption", str(photos), "-o", str(out), "--quiet"]) == 0
    _photos(photos, 1, start=3)
    capsys.readouterr()
    assert main(["caption", str(photos), "-o", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "4/4" in _bar_states(err)[-1]
    assert ": 1 ok, 0 errors, 3 skipped (already in the output)" in err
    assert re.search(r"factcap: 1 images in \d+\.\d s", err)
    assert len(out.read_text().splitlines()) == 4


def test_quiet_caption_prints_the_summary_only(scripted_models, tmp_path, capsys):
    photos = _photos(tmp_path / "photos", 2)
    assert main(["caption", str(photos), "-o", str(tmp_path / "o.jsonl"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("factcap: 2 images in ")


def test_the_count_is_what_the_source_yields_or_none(tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    (tmp_path / "list.txt").write_text(f"{photos / '0.png'}\nphotos/1.png\nmissing.png\n")
    (tmp_path / "rows.csv").write_text("path,id\nphotos/0.png,a\n,b\nphotos/2.png,c\n")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"path": "photos/2.png"}) + "\n")
    mixes = [
        [str(photos)],
        [str(photos), str(photos / "1.png"), str(tmp_path / "photos" / ".." / "photos")],
        [str(tmp_path / "list.txt"), str(photos)],
        [str(tmp_path / "rows.csv"), str(tmp_path / "rows.csv"), str(tmp_path / "rows.jsonl")],
        [str(tmp_path / "photos" / "*.png")],
    ]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"image": [b"x"] * 5, "caption": [f"c{i}" for i in range(5)]})
        pq.write_table(table, tmp_path / "rows.parquet", row_group_size=2)
        mixes.append([str(tmp_path / "rows.parquet"), str(photos)])
    except ImportError:
        pass
    for inputs in mixes:
        assert count_items(inputs) == len(list(open_source(inputs))), inputs
    import tarfile

    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        tar.add(photos / "0.png", arcname="0.png")
    assert count_items([str(photos), str(tmp_path / "shard.tar")]) is None  # read to know
    assert count_items([str(tmp_path / "nothing-here")]) is None  # the job says what is wrong
