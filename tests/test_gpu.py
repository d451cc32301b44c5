"""On a CUDA device. The rest of the suite never sees one (../conftest.py hides it, so a GPU
machine gets the CPU float32 results the tests expect); these run with FACTCAP_TEST_GPU=1 on
a machine that has one, and skip elsewhere saying why."""

from __future__ import annotations

import pytest

from factcap.errors import ConfigError

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_tiny_pipeline_runs_on_cuda(photos):
    import torch

    from factcap.pipeline import Pipeline

    pipe = Pipeline.from_preset("tiny", device="cuda", dtype="float32")
    torch.cuda.reset_peak_memory_stats()
    records = pipe.caption(photos[:2])
    assert [(r.status, r.error) for r in records] == [("ok", None)] * 2
    assert torch.cuda.max_memory_allocated() > 0  # the models ran on the GPU


def test_a_cuda_index_past_the_last_device_is_one_clear_error():
    import torch

    from factcap.backends.hf_common import resolve_device

    count = torch.cuda.device_count()
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(ConfigError, match=f"there are {count} CUDA device"):
        resolve_device(f"cuda:{count}")
