"""A new user's first hour, with hostile input: nothing overwritten or lost, one clear line
for every mistake (checked before any model loads), exit codes that say what happened, and
resume that does not depend on how a path is spelled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from factcap.cli import main
from factcap.errors import UsageError
from factcap.examples import example_paths
from factcap.serve.options import ServeOptions

EXAMPLES = ROOT / "src" / "factcap" / "examples"
FAST = ["--preset", "tiny", "--quiet"]  # tiny random-weight models: plumbing only


def _results(tmp_path: Path) -> Path:
    out = tmp_path / "same.jsonl"
    row = {"id": "a", "source": str(example_paths()[0]), "status": "ok", "captions": {"d": "x"}}
    out.write_text(json.dumps(row) + "\n")
    return out


# --- nothing overwritten -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "evaluate"])
def test_a_command_never_writes_over_its_own_input(tmp_path, capsys, command):
    results = _results(tmp_path)
    before = results.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main([command, str(results), "-o", str(results), *extra]) == 2
        assert "is also an input" in capsys.readouterr().err
    assert results.read_bytes() == before


@pytest.mark.parametrize("command", ["report", "evaluate"])
def test_an_existing_output_needs_overwrite(tmp_path, capsys, command):
    results = _results(tmp_path)
    out = tmp_path / ("o.html" if command == "report" else "o.jsonl")
    out.write_text("precious\n")
    args = [command, str(results), "-o", str(out)]
    if command == "evaluate":
        args += ["--metrics", "rouge_l", "--quiet"]
    assert main(args) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert main([*args, "--overwrite"]) == 0
    assert out.read_text() != "precious\n"


def test_resume_and_overwrite_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["caption", str(EXAMPLES), "-o", str(tmp_path / "o.jsonl"), "--resume", "--overwrite"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --- one line, before any model loads --------------------------------------------------------


def _cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    return subprocess.run(
        [sys.executable, "-m", "factcap.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.mark.slow  # the CLI in subprocesses
def test_outputs_that_cannot_be_written_are_refused_before_models_load(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for output, exit_code, words in (
        ("/dev/full", 3, "not a regular file"),
        (str(blocker / "out.jsonl"), 3, "cannot write"),
        (str(tmp_path / "no-suffix"), 2, "cannot tell the output format"),
    ):
        done = _cli(
            "caption",
            str(EXAMPLES),
            "-o",
            output,
            *FAST,
            *(["--format", "jsonl"] if output == "/dev/full" else []),
        )
        assert done.returncode == exit_code, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr
        assert "captioning" not in done.stderr  # no progress bar: nothing was loaded


@pytest.mark.slow
def test_a_full_disk_while_writing_is_one_line_and_keeps_what_was_written(tmp_path):
    out = tmp_path / "o.jsonl"
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        from factcap.backends import tiny
        for family in ("blip", "chat_vlm", "llm", "grounding_dino", "blip_vqa"):
            tiny.ensure(family)  # built before the limit: only the output is to hit it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (12000, 12000))
        from factcap.cli import main
        sys.exit(main(["caption", {str(EXAMPLES)!r}, "-o", {str(out)!r}, "--quiet",
                       "--batch-size", "1", "--config", {str(_no_ocr(tmp_path))!r}]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("factcap: error")]
    assert "cannot write" in line and "File too large" in line
    assert "Traceback" not in done.stderr
    kept = [json.loads(x) for x in out.read_text().splitlines()[:-1]]  # all but a torn end
    assert 1 <= len(kept) < 5 and all(r["status"] == "ok" for r in kept)


def _no_ocr(tmp_path: Path) -> Path:
    config = tmp_path / "no-ocr.yaml"
    config.write_text("preset: tiny\nocr: null\n")
    return config


@pytest.mark.slow
def test_a_device_this_torch_cannot_use_is_one_line(tmp_path):
    import torch

    # no CUDA device is visible (../conftest.py hides any unless FACTCAP_TEST_GPU=1); with one,
    # an index past the last is the device this torch cannot use
    if torch.cuda.is_available():
        device, words = "cuda:99", f"there are {torch.cuda.device_count()} CUDA device(s)"
    else:
        device, words = "cuda", "no usable CUDA device"
    done = _cli("caption", str(example_paths()[0]), "-o", str(tmp_path / "o.jsonl"),
                "--device", device, *FAST)  # fmt: skip
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_serve_checks_every_option_before_loading_models(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for options, words in (
        (dict(port=99999), "--port must be from 1 to 65535"),
        (dict(port=0), "--port"),
        (dict(queue_size=0), "--queue-size must be at least 1"),
        (dict(max_upload_mb=0), "--max-upload-mb must be above 0"),
        (dict(data_root=tmp_path / "nope"), "is not an existing folder"),
        (dict(data_root=tmp_path, jobs_dir=a_file), "is not a folder"),
        (dict(jobs_dir=tmp_path / "jobs"), "--jobs-dir needs --data-root"),
        (dict(host="0.0.0.0"), "without an API key"),
    ):
        with pytest.raises(UsageError, match=words):
            ServeOptions(**options).checked()
    ok = ServeOptions(data_root=tmp_path, jobs_dir=tmp_path / "jobs").checked()
    assert ok.jobs_dir.is_dir() and ok.data_root == tmp_path.resolve()
    with pytest.raises(UsageError):
        ServeOptions(queue_size=-1).checked()


@pytest.mark.slow  # the CLI in a subprocess
def test_serve_refuses_a_bad_option_in_one_line_before_loading_models(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    done = _cli("serve", "--jobs-dir", str(a_file), "--data-root", str(tmp_path), timeout=60)
    assert done.returncode == 2 and "is not a folder" in done.stderr
    assert "Traceback" not in done.stderr and "Uvicorn" not in done.stderr


# --- exit codes and what a job says --------------------------------------------------------------


@pytest.mark.slow
def test_exit_codes_and_bad_inputs_become_records(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(example_paths()[0], folder / "good.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    os.mkfifo(folder / "p.jpg")  # a FIFO must never be opened (it would hang the job)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        json.dumps({"file_name": str(folder / "good.jpg"), "id": "m1"}) + "\n{broken\n"
        + json.dumps({"caption": "no path"}) + "\n"
    )  # fmt: skip
    config = str(_no_ocr(tmp_path))
    out = tmp_path / "o.jsonl"
    assert main(["caption", str(folder), str(manifest), "-o", str(out), "--config", config,
                 "--quiet"]) == 1  # fmt: skip
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    records = {r["source"]: r for r in lines}
    assert records[str(folder / "good.jpg")]["status"] == "ok"
    assert records[str(folder / "p.jpg")]["error"]["type"] == "NotAFile"
    assert records[str(folder / "broken.png")]["status"] == "error"
    assert records[f"{manifest}:2"]["error"]["type"] == "BadManifestLine"
    assert records[f"{manifest}:3"]["error"]["type"] == "MissingImage"
    assert len(lines) == 6 and "m1" in {r["id"] for r in lines}  # the manifest's own id
    assert "1 ok" not in capsys.readouterr().err  # 2 ok (folder + manifest), 4 errors
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["caption", str(empty), "-o", str(tmp_path / "e.jsonl"), "--config", config,
                 "--quiet"]) == 1  # fmt: skip
    assert "nothing was captioned" in capsys.readouterr().err
    assert main(["caption", str(folder / "good.jpg"), "-o", str(tmp_path / "g.jsonl"),
                 "--config", config, "--quiet"]) == 0  # fmt: skip


@pytest.mark.slow
def test_resume_does_not_depend_on_spelling_and_refuses_other_settings(tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(EXAMPLES, photos, ignore=shutil.ignore_patterns("*.py", "*.md"))
    out = tmp_path / "o.jsonl"
    config = str(_no_ocr(tmp_path))
    os.chdir(tmp_path)
    assert main(["caption", "photos", "-o", str(out), "--config", config, "--quiet"]) == 0
    capsys.readouterr()
    for spelling in ("./photos", str(photos), "photos/../photos"):
        assert main(["caption", spelling, "-o", str(out), "--config", config, "--quiet",
                     "--resume"]) == 0  # fmt: skip
        err = capsys.readouterr().err
        assert "0 images" in err and "5 skipped (already in the output)" in err, err
    assert len(out.read_text().splitlines()) == 5
    assert main(["caption", "photos", "-o", str(out), "--config", config, "--quiet", "--resume",
                 "--style", "short"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "cannot resume" in err and "styles: ['detailed'] in the output, ['short'] now" in err
    assert main(["caption", "photos", "-o", str(out), "--config", config, "--quiet", "--resume",
                 "--regions"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "cannot resume" in err and "regions" in err, err


# --- results read from anywhere ----------------------------------------------------------------


def test_report_and_evaluate_find_images_relative_to_the_results(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    shutil.copy(example_paths()[0], data / "photos" / "a.jpg")
    results = data / "results.jsonl"
    row = {"id": "a", "source": "photos/a.jpg", "status": "ok", "captions": {"short": "A cat."}}
    results.write_text(json.dumps(row) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", str(results), "-o", "r.html"]) == 0
    assert "1 images" in capsys.readouterr().err
    assert main(["evaluate", str(results), "-o", "s.jsonl", "--metrics", "clip_score",
                 "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(n=1)" in out and "failed" not in out
    moved = tmp_path / "moved.jsonl"
    shutil.copy(results, moved)  # the results away from the images: --image-root says where
    assert main(["evaluate", str(moved), "-o", "t.jsonl", "--metrics", "clip_score", "--quiet",
                 "--image-root", str(data)]) == 0  # fmt: skip
    assert "(n=1)" in capsys.readouterr().out
    assert main(["evaluate", str(moved), "-o", "u.jsonl", "--metrics", "clip_score",
                 "--quiet"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "(n=0, 1 failed)" in captured.out and "images not found" in captured.err


# --- papercuts --------------------------------------------------------------------------------------


def test_models_check_names_the_config_it_checked(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("preset: tiny\n")
    main(["models", "check", "--config", str(config)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"config {config}:") and "preset tiny" not in last


@pytest.mark.slow
def test_quiet_means_quiet(tmp_path):
    done = _cli("caption", str(example_paths()[0]), "-o", str(tmp_path / "o.jsonl"), *FAST)
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and "%|" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("factcap: 1 images")


@pytest.mark.slow  # the CLI in a subprocess
def test_a_hub_model_without_the_hub_is_one_line_at_once(tmp_path):
    """Without HF_HUB_OFFLINE, a model that is not on disk used to cost 30 s of download
    retries before its one-line message; an unreachable hub is now found out first."""
    config = tmp_path / "c.yaml"
    config.write_text("preset: tiny\ncaptioners: [{model: 'hf:some-org/not-downloaded'}]\n")
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))  # nothing there
    done = subprocess.run(
        [sys.executable, "-m", "factcap.cli", "caption", str(example_paths()[0]), "-o",
         str(tmp_path / "o.jsonl"), "--config", str(config), "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "some-org/not-downloaded" in done.stderr and "the hub is not reachable" in done.stderr
    assert "Traceback" not in done.stderr
