"""Config: presets, YAML overrides, validation with clear messages."""

from __future__ import annotations

import pytest

from factcap.config import load_config, preset_dict, preset_names
from factcap.errors import ConfigError


def test_every_preset_is_valid():
    assert set(preset_names()) >= {"tiny", "small", "vfc", "api"}
    for name in preset_names():
        config = load_config(preset=name)
        assert len(config.captioners) >= 2 and config.llm.model and config.detector


def test_yaml_overrides_a_preset(tmp_path):
    prompt = tmp_path / "prompts" / "mine.txt"
    prompt.parent.mkdir()
    prompt.write_text("Claims please: {proposals}")
    path = tmp_path / "c.yaml"
    path.write_text(
        "preset: small\n"
        "captioners:\n  - model: hf:/models/blip\n    device: cuda:1\n    dtype: float16\n"
        "    batch_size: 2\n    options: {max_new_tokens: 7}\n"
        "detector: {options: {box_threshold: 0.5}}\n"
        "vqa: {model: tiny:blip_vqa}\n"
        "prompts: {claims: prompts/mine.txt}\n"
        "limits: {max_pixels: 1000}\n"
        "styles: [alt, short, alt]\n"
    )
    config = load_config(path)
    assert config.preset == "small"
    [cap] = config.captioners  # lists replace
    assert (cap.model, cap.device, cap.dtype, cap.batch_size) == (
        "hf:/models/blip",
        "cuda:1",
        "float16",
        2,
    )
    # same model: options merge into the preset's
    assert config.detector.model == preset_dict("small")["detector"]["model"]
    assert config.detector.options == {"box_threshold": 0.5, "text_threshold": 0.25}
    assert config.vqa.options == {}  # another model: the preset's role is replaced whole
    assert config.prompts["claims"] == str(prompt)  # relative to the config file
    assert config.limits.max_pixels == 1000
    assert config.styles == ["alt", "short"]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("batch_sise: 3", "batch_sise"),
        ("device: banana", "device"),
        ("dtype: float8", "dtype"),
        ("styles: []", "styles"),
        ("styles: [poem]", "unknown style"),
        ("verify: {refuted_threshold: 0.9, supported_threshold: 0.2}", "must be below"),
        ("prompts: {compsoe: x.txt}", "unknown prompt name"),
        ("prompts: {compose: missing.txt}", "not found"),
        ("captioners: []", "captioners"),
        ("- just\n- a list", "must hold a mapping"),
        ("key: [unclosed", "not valid YAML"),
        ("preset: huge", "unknown preset"),
    ],
)
def test_bad_configs_are_one_clear_error(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    prefix = "" if yaml_text.startswith(("-", "preset")) else "preset: tiny\n"
    path.write_text(prefix + yaml_text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/no/such/config.yaml")
