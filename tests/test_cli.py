"""Command-line behaviour: help, errors, model management."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from factcap.cli import main


def test_help_imports_no_torch():
    """``factcap --help`` answers without importing torch or transformers, the imports that
    make it slow (how fast it answers is measured by ``benchmarks/startup.py``)."""
    code = (
        "import sys\nfrom factcap.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit as e: assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "print('heavy:', ' '.join(heavy) or 'none')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "usage:" in out and "caption" in out  # the help was printed
    assert out.splitlines()[-1] == "heavy: none"


@pytest.mark.parametrize(
    "cmd",
    [
        ["caption", "--help"],
        ["models", "--help"],
        ["models", "list", "--help"],
        ["models", "check", "--help"],
        ["models", "make-tiny", "--help"],
    ],
)
def test_subcommand_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(cmd)
    assert exit_.value.code == 0
    assert "example" in capsys.readouterr().out


def test_bad_arguments_give_one_clear_line(tmp_path, capsys):
    assert main(["caption", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["caption", str(ROOT), "-o", "x.jsonl", "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: tiny\nbatch_sise: 3\n")
    assert main(["caption", str(ROOT), "-o", "x.jsonl", "--config", str(bad)]) == 2
    assert "batch_sise" in capsys.readouterr().err


def test_missing_model_is_one_line_and_leaves_the_output_alone(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"preset: tiny\ncaptioners: [{{model: 'hf:{tmp_path}/no-such-model'}}]\n")
    photo = ROOT / "src/factcap/examples/chelsea.jpg"
    out = tmp_path / "o.jsonl"
    out.write_text('{"earlier": "results"}\n')
    args = ["caption", str(photo), "-o", str(out), "--config", str(cfg), "--quiet"]
    assert main(args) == 2
    assert "exists: --resume continues it, --overwrite replaces it" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no-such-model" in err and "hf:/path/to" in err and "Traceback" not in err
    assert out.read_text() == '{"earlier": "results"}\n'


@pytest.mark.slow
def test_options_that_do_not_fit_the_model_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: tiny\ndetector: {options: {not_an_option: 1}}\n")
    photo = ROOT / "src/factcap/examples/chelsea.jpg"
    args = ["caption", str(photo), "-o", str(tmp_path / "o.jsonl"), "--config", str(cfg)]
    assert main(args + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert "detector tiny:grounding_dino" in err and "not_an_option" in err


def test_models_list_shows_specs_families_and_presets(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for text in ("hf:<hub id or local dir>", "grounding-dino", "tiny:<family>", "vfc:", "api:"):
        assert text in out


def test_models_check_reports_missing_weights(tmp_path, capsys):
    assert main(["models", "check", "--preset", "tiny"]) == 0
    assert main(["models", "check", "--preset", "vfc"]) == 1
    out = capsys.readouterr().out
    assert "MISSING captioner  hf:llava-hf/llava-1.5-7b-hf" in out
    assert "model(s) missing" in out
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: tiny\nllm: {model: 'hf:/models/not-here'}\nvqa: {model: tiny:nope}\n")
    assert main(["models", "check", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "MISSING llm" in out and "not a local directory" in out
    assert "MISSING vqa" in out and "unknown tiny family" in out


@pytest.mark.slow
def test_make_tiny_builds_every_family(tmp_path, capsys):
    from factcap.backends.tiny import FAMILIES

    assert main(["models", "make-tiny", "--out", str(tmp_path)]) == 0
    for family in FAMILIES:
        path = tmp_path / family
        if (path / "model_index.json").exists():  # a diffusers pipeline
            assert json.loads((path / "model_index.json").read_text())["_class_name"]
        else:
            assert json.loads((path / "config.json").read_text())["model_type"]
    assert f"built {len(FAMILIES)} tiny checkpoints" in capsys.readouterr().err


def test_caption_help_lists_every_input_kind_and_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["caption", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for kind in ("tar shards", "Parquet", "manifests", "save_to_disk", "globs", "brace"):
        assert kind in out, kind
    assert "exit status: 0" in out and "3 the output could not be written" in out
