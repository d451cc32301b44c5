"""What a new user met on the command line (issue 25, item 5): what ``factcap caption``
prints before and after its work and how its progress bar counts, the links ``study serve``
prints, and a service log without the libraries' loading bars."""

from __future__ import annotations

import os
import warnings

import pytest

from factcap.cli import main

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
