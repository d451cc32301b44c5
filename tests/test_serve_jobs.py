"""Dataset jobs of the service (:mod:`factcap.serve.jobs`): what their error records say about
files outside the data root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from factcap.config import load_config
from factcap.errors import PathRefused
from factcap.pipeline.models import Models
from factcap.pipeline.runner import Pipeline
from factcap.serve.jobs import Jobs, resolve_inside
from scripted import ScriptedCaptioner, ScriptedDetector, ScriptedLLM, ScriptedVQA
from test_serve import CLAIMS, WAIT_S, scripted_pipeline


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root with a photo, a symlinked photo and a symlinked folder that lead out, and a
    manifest naming a file outside by its absolute path and one through the folder link."""
    data, outside = tmp_path / "data", tmp_path / "private"
    (data / "set").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (24, 20), (200, 90, 40)).save(data / "set" / "photo.png")
    Image.new("RGB", (16, 16)).save(outside / "secret.png")
    Image.new("RGB", (16, 16)).save(outside / "other.png")
    (data / "set" / "link.png").symlink_to(outside / "secret.png")
    (data / "escape").symlink_to(outside, target_is_directory=True)
    (data / "list.txt").write_text(f"set/photo.png\n{outside / 'secret.png'}\nescape/other.png\n")
    return data


def _records(root: Path, tmp_path: Path, name: str) -> dict[str, dict]:
    jobs = Jobs(scripted_pipeline(), root, tmp_path / "jobs")
    job = jobs.submit(name, ["short"], None)
    assert job.thread is not None
    job.thread.join(WAIT_S)
    assert job.state == "done", job.message
    return {r["source"]: r for r in map(json.loads, job.results.read_text().splitlines())}


def test_a_symlink_out_of_the_data_root_is_called_one_not_a_manifest(root, tmp_path):
    records = _records(root, tmp_path, "set")
    assert records["set/photo.png"]["status"] == "ok"
    error = records["set/link.png"]["error"]
    assert error["type"] == "Forbidden"
    assert error["message"] == (
        "set/link.png leads out of the data root through a symbolic link: it was not opened"
    )
    assert "manifest" not in error["message"]


def test_a_manifest_naming_a_file_outside_is_called_a_manifest(root, tmp_path):
    records = _records(root, tmp_path, "list.txt")
    assert records["set/photo.png"]["status"] == "ok"
    named = records["<outside the data root>/secret.png"]["error"]
    assert named["type"] == "Forbidden"
    assert named["message"] == (
        "a manifest or dataset column names a path outside the data root (secret.png): "
        "it was not opened"
    )
    through_link = records["escape/other.png"]["error"]
    assert through_link["message"].startswith("escape/other.png leads out of the data root")
    for record in records.values():  # no path of the server's own
        assert str(tmp_path) not in json.dumps(record)


def test_a_job_path_that_is_a_symlink_out_is_refused_as_one(root):
    with pytest.raises(PathRefused, match="'escape' leads out of the data root through a symbolic"):
        resolve_inside(root, "escape")
    with pytest.raises(PathRefused, match=r"^'\.\./private' is outside the data root$"):
        resolve_inside(root, "../private")


class _FailsNamingServerPaths(ScriptedCaptioner):
    """Fails as a library might, naming the server's own folders: a file under the data root,
    the data root itself, and a file under the jobs folder."""

    def __init__(self, root: Path, jobs: Path):
        super().__init__("cap-fails", "")
        self.root, self.jobs = root.resolve(), jobs.resolve()

    def caption(self, images, prompt=None):
        raise OSError(
            f"cannot read {self.root / 'set' / 'photo.png'} under {self.root}: "
            f"the cache {self.jobs / 'cache' / 'x.bin'} is full"
        )


def test_an_error_record_names_no_server_path(root, tmp_path):
    jobs_dir = tmp_path / "jobs"
    config = load_config(preset="tiny", overrides={"batch_size": 4})
    failing = _FailsNamingServerPaths(root, jobs_dir)
    models = Models(
        config,
        built={
            "captioner:0": (failing, 4),
            "captioner:1": (ScriptedCaptioner("cap-b", "A cat next to a lamp."), 4),
            "llm": (ScriptedLLM(CLAIMS, "A grey cat sits on a sofa."), 4),
            "detector": (ScriptedDetector(["cat"]), 4),
            "vqa": (ScriptedVQA(lambda q: 0.9), 4),
        },
    )
    job = Jobs(Pipeline(config, models=models), root, jobs_dir).submit("set", ["short"], None)
    assert job.thread is not None
    job.thread.join(WAIT_S)
    assert job.state == "done", job.message
    records = [json.loads(line) for line in job.results.read_text().splitlines()]
    photo = next(r for r in records if r["source"] == "set/photo.png")
    assert photo["status"] == "error"
    # the server's folders are named relative to the data root, or by a label
    assert (
        "cannot read set/photo.png under <data root>: the cache <jobs>/cache/x.bin is full"
        in (photo["error"]["message"])
    )
    for record in records:
        text = json.dumps(record)
        assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, text
