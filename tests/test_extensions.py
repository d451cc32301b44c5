"""Extension points: a plug-in package installed with pip adds a backend and a metric; a
config adds a caption style; a stage and a sink are one module / class each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from factcap.config import load_config
from factcap.errors import ConfigError
from factcap.examples import example_paths
from scripted import scripted_pipeline

PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "factcap-echo"
        version = "0.1"

        [project.entry-points."factcap.backends"]
        echo = "factcap_echo:register_backends"

        [project.entry-points."factcap.metrics"]
        words = "factcap_echo:register_metrics"
        """,
    "factcap_echo/__init__.py": '''
        """A factcap plug-in: a captioner that says its spec, a metric that counts words."""
        from factcap.backends.registry import register
        from factcap.metrics import Metric, Score, register_metric


        class EchoCaptioner:
            """Captions every image with the text after ``echo:``."""

            def __init__(self, location, **options):
                self.text = location.replace("-", " ")

            def caption(self, images, prompt=None):
                return [self.text for _ in images]


        class Words(Metric):
            name, value_names = "words", ("words",)

            def score(self, samples, resources):
                return [Score({"words": float(len(s.caption.split()))}) for s in samples]


        def register_backends():
            register("captioner", "echo", EchoCaptioner, description="says its spec")


        def register_metrics():
            register_metric("words", Words)
        ''',
}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plug-in, installed by pip into a folder of its own (put on PYTHONPATH)."""
    src = tmp_path_factory.mktemp("plugin-src")
    for name, text in PLUGIN.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--target", str(site), str(src)],
        check=True,
        capture_output=True,
    )
    return site


def _run(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.mark.slow  # pip installs the plug-in, then Python runs it
def test_an_installed_plugin_is_used_by_spec(plugin_site):
    code = (
        "from factcap.backends import registry\n"
        "from factcap.metrics import build, metric_names\n"
        "cap = registry.build('captioner', 'echo:a-red-kite')\n"
        "print(cap.name, cap.caption([None, None]), 'words' in metric_names())\n"
    )
    out = _run(plugin_site, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("[")[0].strip() == "echo:a-red-kite"
    assert "['a red kite', 'a red kite'] True" in out.stdout
    listing = _run(plugin_site, "-m", "factcap.cli", "models", "list")
    assert "captioner  echo" in listing.stdout and "says its spec" in listing.stdout
    # without the plug-in on the path, the scheme is unknown: the test above is not vacuous
    bare = subprocess.run(
        [
            sys.executable,
            "-c",
            "from factcap.backends import registry\nregistry.build('captioner', 'echo:x')",
        ],
        capture_output=True,
        text=True,
    )
    assert bare.returncode != 0 and "bad model spec 'echo:x'" in bare.stderr


@pytest.mark.slow
def test_a_plugin_captioner_and_metric_run_in_the_cli(plugin_site, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "preset: tiny\nocr: null\n"
        "captioners: [{model: 'echo:a-grey-cat-on-a-sofa'}, {model: 'tiny:blip'}]\n"
    )
    out, scores = tmp_path / "o.jsonl", tmp_path / "s.jsonl"
    photo = str(example_paths()[1])
    done = _run(
        plugin_site,
        "-m",
        "factcap.cli",
        "caption",
        photo,
        "-o",
        str(out),
        "--config",
        str(config),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["proposals"][0] == {
        "model": "echo:a-grey-cat-on-a-sofa",
        "text": "a grey cat on a sofa",
    }
    scored = _run(
        plugin_site,
        "-m",
        "factcap.cli",
        "evaluate",
        str(out),
        "-o",
        str(scores),
        "--metrics",
        "words",
        "--source",
        "proposals",
        "--quiet",
    )
    assert scored.returncode == 0, scored.stderr
    rows = {r["caption_source"]: r for r in map(json.loads, scores.read_text().splitlines())}
    assert rows["proposal:echo:a-grey-cat-on-a-sofa"]["metrics"] == {"words": 6.0}


def test_a_config_adds_a_style_without_touching_the_package(tmp_path):
    (tmp_path / "product.txt").write_text(
        "---\ndescription: a product listing title\npieces: phrases\nfallback: first\n---\n"
        "Write a product listing title for the object in the image.\n"
    )
    (tmp_path / "c.yaml").write_text(
        "preset: tiny\ncustom_styles: {product: product.txt}\nstyles: [product, short]\n"
    )
    config = load_config(path=tmp_path / "c.yaml")
    assert config.styles == ["product", "short"]
    style = config.style_registry()["product"]
    assert (style.pieces, style.fallback) == ("phrases", "first")
    assert style.prompt == "Write a product listing title for the object in the image.\n"
    with pytest.raises(ConfigError, match="unknown style"):
        load_config(preset="tiny", overrides={"styles": ["product"]})  # not without its file
    (tmp_path / "bad.yaml").write_text("preset: tiny\ncustom_styles: {short: product.txt}\n")
    with pytest.raises(ConfigError, match="is a shipped style"):
        load_config(path=tmp_path / "bad.yaml")


@pytest.mark.slow
def test_a_custom_style_reaches_the_llm_and_the_record(tmp_path):
    from factcap.pipeline import Pipeline

    (tmp_path / "product.txt").write_text("Write a product title. PRODUCT-STYLE-MARKER\n")
    (tmp_path / "c.yaml").write_text(
        "preset: tiny\nocr: null\ncustom_styles: {product: product.txt}\nstyles: [product]\n"
    )
    pipe = Pipeline(load_config(path=tmp_path / "c.yaml"))
    seen = []
    llm = pipe.models["llm"].backend
    chat = llm.chat
    llm.chat = lambda conversations, **kw: (seen.extend(conversations), chat(conversations, **kw))[
        1
    ]
    [record] = pipe.caption(example_paths()[:1])
    assert list(record.captions) == ["product"] and record.captions["product"].strip()
    assert any("PRODUCT-STYLE-MARKER" in c[-1]["content"] for c in seen)


def test_adding_a_style_a_stage_and_a_sink_touches_the_files_architecture_md_says():
    """ARCHITECTURE.md's counts, checked against where the tables are."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    from factcap.engine.sinks import SINKS
    from factcap.media import MEDIA_MODULES
    from factcap.pipeline.plan import STAGE_MODULES
    from factcap.prompts.style import shipped_styles

    styles = ROOT / "src/factcap/prompts/styles"
    assert sorted(p.stem for p in styles.glob("*.txt")) == sorted(shipped_styles())
    assert all(m.startswith("factcap.pipeline.") for m in STAGE_MODULES)
    assert set(SINKS) == {"jsonl", "parquet", "webdataset"}
    assert all(m.startswith("factcap.media.") for m in MEDIA_MODULES)
    for needle in (
        "| caption style | 1 |",
        "| pipeline stage | 2 |",
        "| output format (sink) | 2 |",
        "| media kind | 2 |",
    ):
        assert needle in text, needle


STAGE_MODULE = '''
"""An example stage: counts the words of the proposals into the record's extra."""
from factcap.pipeline.stage import Stage
from factcap.pipeline.work import live


def stages(config):
    return [Stage("count_words", None, run)]


def run(batch, model, context):
    for w in live(batch):
        w.record.extra["proposal_words"] = sum(len(p.text.split()) for p in w.record.proposals)
'''


def test_a_new_stage_is_one_module_and_one_line(tmp_path, monkeypatch):
    from factcap.engine.ray_executor import plan
    from factcap.inputs import expand
    from factcap.pipeline import plan as plan_module

    (tmp_path / "count_words_stage.py").write_text(STAGE_MODULE)  # the one new module
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = list(plan_module.STAGE_MODULES)
    modules.insert(modules.index("factcap.pipeline.ocr") + 1, "count_words_stage")  # the line
    monkeypatch.setattr(plan_module, "STAGE_MODULES", tuple(modules))
    config = load_config(preset="tiny", overrides={"ocr": None})
    pipe = scripted_pipeline(config)
    assert [s.name for s in pipe.stages][:4] == [
        "caption:0",
        "caption:1",
        "alt_text",
        "count_words",
    ]
    [record] = pipe.run(expand(example_paths()[:1]))
    assert record.extra["proposal_words"] == 9 and record.captions["detailed"]
    assert "count_words" in [s.name for s in plan(config)]  # Ray runs it as a task stage


def test_a_new_sink_is_one_class_and_its_reader(tmp_path, monkeypatch):
    import csv

    from factcap.engine import records, sinks
    from factcap.engine.job import CaptionJob, JobSpec

    class CsvSink(sinks.Sink):  # the new class
        format, suffix = "csv", ".csv"

        def __init__(self, path, *, append=False, overwrite=False, on_commit=None, **_):
            self.path, self.written = Path(path), 0
            self._file = self.path.open("a" if append else "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._file)

        def write(self, record, item=None):
            self._csv.writerow([record.id, json.dumps(sinks.record_dict(record))])
            self.written += 1

        def close(self):
            self._file.close()

    def read_csv(path, state):  # ... and its reader
        with path.open(newline="", encoding="utf-8") as handle:
            for _, data in csv.reader(handle):
                yield json.loads(data)

    monkeypatch.setitem(sinks.SINKS, "csv", CsvSink)
    monkeypatch.setitem(records.READERS, "csv", (".csv", read_csv))
    config = load_config(preset="tiny", overrides={"ocr": None})
    out = tmp_path / "captions.csv"
    spec = JobSpec(inputs=[str(p) for p in example_paths()[:2]], output=out)
    result = CaptionJob(spec, config).run(scripted_pipeline(config))
    assert result.written == result.ok == 2
    back = list(records.read_records(out))
    assert [r["captions"]["detailed"] for r in back] == ["A grey cat sits on a sofa."] * 2


FRAMES_MODULE = '''
"""An example media kind: a ``.frames`` file lists image files (one per line, relative to
it): one item, whose views are those frames (every ``stride``-th, the kind's one setting)."""
from pathlib import Path

from pydantic import Field

from factcap.errors import ImageError
from factcap.images import decode
from factcap.media import KindSettings, Loaded, Loader, MediaKind, View
from factcap.schema import Media


class FramesConfig(KindSettings):
    stride: int = Field(default=1, ge=1)


class FramesLoader(Loader):
    def __init__(self, config):
        self.limits = config.limits.decode_limits()
        self.stride = config.frames.stride

    def result(self, item):
        listing = Path(item.source)
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not names:
            raise ImageError("EmptyFrames", f"{listing} lists no frames")
        files = [str(listing.parent / name) for name in names[:: self.stride]]
        views = [View(decode(f, self.limits).image, i) for i, f in enumerate(files)]
        listed = [{"index": i, "file": f} for i, f in enumerate(files)]
        return Loaded(views, Media(KIND.name, listed, {"frames": len(files)}))


class FramesKind(MediaKind):
    name = "frames"
    label = "frame folder"
    formats = ("frames",)
    names_views = True
    config_key = "frames"
    settings = FramesConfig

    def loader(self, config, in_process=False):
        return FramesLoader(config)


KIND = FramesKind()
'''


def test_a_new_media_kind_is_one_module_and_one_line(tmp_path, monkeypatch):
    """A toy media kind (a list of frames as one item, with a config section) the way
    ARCHITECTURE.md says: its module and its line in MEDIA_MODULES; then config, caption,
    evaluate and report handle it."""
    import shutil

    from factcap import media
    from factcap.cli import main
    from factcap.engine.job import CaptionJob, JobSpec
    from factcap.engine.records import read_records

    (tmp_path / "frames_kind.py").write_text(FRAMES_MODULE)  # the one new module
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(media, "MEDIA_MODULES", (*media.MEDIA_MODULES, "frames_kind"))  # line
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, path in enumerate(example_paths()[:3]):
        shutil.copy(path, clip / f"f{i}.jpg")
    (clip / "shot.frames").write_text("f0.jpg\nf1.jpg\nf2.jpg\n")
    (clip / "empty.frames").write_text("\n")
    assert load_config(preset="tiny").frames.stride == 1  # its section, defaulted
    with pytest.raises(ConfigError, match="frames.stride"):
        load_config(preset="tiny", overrides={"frames": {"stride": 0}})
    config = load_config(preset="tiny", overrides={"ocr": None, "frames": {"stride": 1}})
    out = tmp_path / "out.jsonl"
    inputs = [str(clip), str(example_paths()[3])]  # the folder: its .frames files are found
    CaptionJob(JobSpec(inputs=inputs, output=out), config).run(scripted_pipeline(config))
    rows = {Path(r["source"]).name: r for r in read_records(out)}
    assert set(rows) == {"shot.frames", "empty.frames", "f0.jpg", "f1.jpg", "f2.jpg", "coffee.jpg"}
    shot = rows["shot.frames"]
    assert shot["status"] == "ok" and shot["media"]["kind"] == "frames"
    assert [v["index"] for v in shot["media"]["views"]] == [0, 1, 2]
    assert shot["media"]["facts"] == {"frames": 3}
    assert {p["view"] for p in shot["proposals"]} == {0, 1, 2}  # each captioner, each frame
    [cat] = shot["claims"]
    assert {b["view"] for b in cat["evidence"]["detector_boxes"]} == {0, 1, 2}
    assert cat["evidence"]["found_on_views"] == [0, 1, 2] and shot["captions"]["detailed"]
    assert rows["empty.frames"]["error"]["type"] == "EmptyFrames"
    assert "media" not in rows["coffee.jpg"]  # photos as before

    scores = tmp_path / "scores.jsonl"
    assert main(["evaluate", str(out), "-o", str(scores), "--metrics", "clip_score"]) == 0
    by_id = {json.loads(line)["id"]: json.loads(line) for line in scores.read_text().splitlines()}
    assert by_id[shot["id"]]["metrics"]["clip_score"] is not None  # scored on its frames

    report = tmp_path / "report.html"
    assert main(["report", str(out), "-o", str(report)]) == 0
    assert "its views were not saved" not in report.read_text()  # a strip of its three frames
