"""What the real-size builders share: the stored configs, cutting layers, counting parameters
without allocating them, and saving a checkpoint with a description of what was built.

A config file ``configs/<arch>.json`` holds ``hub_id``, ``model_class`` (a transformers
class), ``published_parameters``, ``layer_keys`` (dotted paths to every stack's layer count;
a list value such as Swin's ``depths`` is cut stage by stage; ``min_layers`` may keep a stack
above the cut where the architecture needs it), ``config`` (the published
transformers config) and, for some, ``processor`` settings. ``_source`` says where the values
come from and what is unsure.

>>> spec = load_spec("qwen2.5-1.5b-instruct")
>>> spec["config"]["hidden_size"], cut_layers(spec, 2)["num_hidden_layers"]
(1536, 2)
>>> layer_counts(spec, cut_layers(spec, 2))
{'num_hidden_layers': 2}
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from factcap.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
#: Bytes a float32 build needs per parameter: the weights, plus what the random initialisation
#: and save_pretrained hold at once (measured: Qwen2.5-1.5B cut to 8 layers, 608 M parameters
#: = 2.4 GB of weights, peaked at 3.7 GB RSS with torch loaded, so about 1.3 x the weights).
BUILD_BYTES_PER_PARAMETER = 4 * 1.3


def load_spec(arch: str) -> dict[str, Any]:
    """The stored description of ``arch`` (see the module docstring)."""
    path = CONFIGS / f"{arch}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS.glob("*.json"))
        raise ConfigError(f"no stored config for {arch!r}; known: {', '.join(known)}")
    return json.loads(path.read_text(encoding="utf-8"))


def _walk(config: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    *parents, key = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    return node, key


def cut_layers(spec: dict[str, Any], layers: int | None) -> dict[str, Any]:
    """A copy of ``spec``'s config with every stack in ``layer_keys`` cut to at most
    ``layers`` layers (None: as published), but not below the spec's ``min_layers``."""
    if layers is not None and layers < 1:
        raise ConfigError(f"--layers must be at least 1, not {layers}")
    config = copy.deepcopy(spec["config"])
    if layers is None:
        return config
    floor = spec.get("min_layers", {})
    for dotted in spec["layer_keys"]:
        node, key = _walk(config, dotted)
        value, keep = node[key], max(layers, floor.get(dotted, 1))
        node[key] = [min(v, keep) for v in value] if isinstance(value, list) else min(value, keep)
    return config


def layer_counts(spec: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The layer count of every stack of ``config``, by its key in ``layer_keys``."""
    counts = {}
    for dotted in spec["layer_keys"]:
        node, key = _walk(config, dotted)
        counts[dotted] = node[key]
    return counts


def transformers_config(config: dict[str, Any]) -> Any:
    """The transformers config object of a config dict (its ``model_type`` picks the class)."""
    from transformers import AutoConfig

    data = dict(config)
    return AutoConfig.for_model(data.pop("model_type"), **data)


def count_parameters(model_class: str, config: Any) -> int:
    """Parameters of ``model_class(config)``, built on the meta device: nothing allocated."""
    return parameter_counts(model_class, config)[0]


def parameter_counts(model_class: str, config: Any) -> tuple[int, int]:
    """(parameters, elements of the largest parameter) of ``model_class(config)``, built on
    the meta device: nothing allocated."""
    import torch
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, model_class)(config)
    sizes = [p.numel() for p in model.parameters()]
    return sum(sizes), max(sizes, default=0)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable``; psutil if present)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def directory_size(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def build_model(
    spec: dict[str, Any], config: Any, out: Path, processor: Any, generation: Any = None
) -> Any:
    """Seeded random weights for ``spec["model_class"](config)``, saved with ``processor``
    (and a generation config) into ``out``; returns the model."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = getattr(transformers, spec["model_class"])(config).eval()
    if generation is not None:
        model.generation_config = generation
    Path(out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return model


def result(arch: str, spec: dict[str, Any], config: dict[str, Any], model: Any) -> dict[str, Any]:
    """What a builder returns: ``{"arch", "parameters", "layers", "reduced"}``."""
    actual = layer_counts(spec, config)
    return {
        "arch": arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": actual,
        "reduced": actual != layer_counts(spec, spec["config"]),
    }


def chat_generation_config(tokenizer: Any, stop: list[str]) -> Any:
    """Greedy generation that stops at any of the ``stop`` tokens, padding with the pad token."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in stop],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
