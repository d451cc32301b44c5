"""The one place that maps a model spec string to a backend class.

Spec strings (README, "Model specs"):

- ``hf:<hub id or local directory>`` — transformers, loaded with ``from_pretrained``; the
  backend is chosen by the checkpoint's ``model_type`` and the role it plays;
- ``openai:<model name>`` — any OpenAI-compatible server;
- ``rapidocr`` — the OCR expert shipped inside ``rapidocr-onnxruntime``;
- ``tiny:<family>`` — a tiny random-weight checkpoint built offline, then loaded as ``hf:``;
- ``bundled:<name>`` — a checkpoint shipped inside the factcap package
  (``factcap/models/<name>``, e.g. ``bundled:shapes/llm``), loaded as ``hf:``;
- ``<scheme>:<anything>`` — a scheme a plug-in registered.

Backends are imported lazily, only when built, so nothing here imports torch.

**Plug-ins.** A package outside factcap adds backends with :func:`register` (a role, a
scheme of its own or an existing one, the ``model_type`` families it serves, and the class as
``"module:Class"`` or the class itself). An installed package can do that without being
imported by hand: declare a function in the ``factcap.backends`` entry-point group (in its
``pyproject.toml``: ``[project.entry-points."factcap.backends"] mine = "mypkg:register"``);
factcap calls it the first time it looks a backend up. A backend class is built as
``cls(location, **options)`` and gets ``name`` set to the spec.

>>> parse_spec("hf:Salesforce/blip-image-captioning-base")
('hf', 'Salesforce/blip-image-captioning-base')
>>> entry_for("detector", "hf", "owlv2").target
'factcap.backends.hf_detectors:OwlDetector'
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from factcap.errors import ConfigError, ModelNotAvailable
from factcap.plugins import call_group
from factcap.roles import ROLES, role_of

if TYPE_CHECKING:
    from factcap.config import Config, RoleConfig

SCHEMES = ["hf", "openai", "rapidocr", "tiny", "bundled"]
ANY = "*"
ENTRY_POINT_GROUP = "factcap.backends"


@dataclass(frozen=True)
class Entry:
    """One backend: for ``role`` and ``scheme``, checkpoints whose model_type is in ``families``
    (``*`` = any not claimed by another entry) are served by ``target`` ("module:Class", or
    the class itself for a plug-in that registers one)."""

    role: str
    scheme: str
    families: tuple[str, ...]
    target: str | type
    description: str

    @property
    def family_label(self) -> str:
        return "any other" if self.families == (ANY,) else ", ".join(self.families)


def _e(role: str, scheme: str, families: tuple[str, ...], target: str, description: str) -> Entry:
    return Entry(role, scheme, families, f"factcap.backends.{target}", description)


ENTRIES: list[Entry] = [
    _e("captioner", "hf", ("blip",), "hf_blip:BlipCaptioner", "BLIP image captioning"),
    _e("captioner", "hf", ("blip-2",), "hf_blip:Blip2Captioner", "BLIP-2 (OPT / Flan-T5)"),
    _e("captioner", "hf", ("kosmos-2",), "hf_blip:Kosmos2Captioner", "Kosmos-2 grounded captions"),
    _e(
        "captioner",
        "hf",
        (ANY,),
        "hf_vlm:ChatVLMCaptioner",
        "any chat VLM AutoModelForImageTextToText loads (LLaVA, Qwen2.5-VL, SmolVLM, ...)",
    ),
    _e(
        "captioner",
        "openai",
        (ANY,),
        "openai_compat:OpenAICaptioner",
        "a vision chat model behind an OpenAI-compatible server",
    ),
    _e(
        "detector",
        "hf",
        ("grounding-dino", "mm-grounding-dino"),
        "hf_detectors:GroundingDinoDetector",
        "Grounding DINO zero-shot detection",
    ),
    _e(
        "detector",
        "hf",
        ("owlv2", "owlvit"),
        "hf_detectors:OwlDetector",
        "OWL-ViT / OWLv2 zero-shot detection",
    ),
    _e("vqa", "hf", ("blip",), "hf_blip:BlipVQA", "BLIP VQA, P(yes) from the answer decoder"),
    _e("vqa", "hf", (ANY,), "hf_vlm:ChatVLMVQA", "any chat VLM asked yes or no, P(yes)"),
    _e(
        "vqa",
        "openai",
        (ANY,),
        "openai_compat:OpenAIVQA",
        "a vision chat model asked yes or no, P(yes) from logprobs",
    ),
    _e(
        "judge",
        "hf",
        (ANY,),
        "hf_vlm:ChatVLMGrader",
        "any chat VLM as a caption grader, with token probabilities from its logits",
    ),
    _e(
        "judge",
        "openai",
        (ANY,),
        "openai_compat:OpenAIGrader",
        "a vision chat model as a caption grader, with token logprobs where the server has them",
    ),
    _e("llm", "hf", (ANY,), "hf_llm:CausalLM", "a causal LM with its chat template"),
    _e("llm", "openai", (ANY,), "openai_compat:OpenAILLM", "any OpenAI-compatible chat server"),
    _e(
        "embedder",
        "hf",
        ("clip", "siglip", "siglip2"),
        "hf_clip:ClipEmbedder",
        "CLIP / SigLIP joint embeddings",
    ),
    _e("ocr", "rapidocr", (ANY,), "ocr_rapid:RapidOCRReader", "PP-OCR via rapidocr-onnxruntime"),
    _e(
        "text_embedder",
        "hf",
        (ANY,),
        "hf_text:SentenceEmbedder",
        "a sentence-embedding encoder (mean pooling), e.g. all-MiniLM-L6-v2",
    ),
    _e(
        "t2i",
        "hf",
        (ANY,),
        "hf_diffusers:DiffusersTextToImage",
        "a diffusers text-to-image pipeline (SD-Turbo, SDXL-Turbo, ...)",
    ),
]


def register(
    role: str,
    scheme: str,
    target: str | type,
    families: tuple[str, ...] | str = ANY,
    description: str = "",
) -> Entry:
    """Add a backend: ``target`` serves ``role`` for specs ``<scheme>:...`` whose checkpoints'
    ``model_type`` is in ``families`` (``"*"``: any not claimed by another entry). A new
    scheme becomes valid in specs. Entries registered later win over earlier ones for the same
    family, so a plug-in can replace a shipped backend.

    Example:
        >>> class Echo:
        ...     def __init__(self, location, **options):
        ...         self.location = location
        ...     def caption(self, images, prompt=None):
        ...         return [self.location] * len(images)
        >>> _ = register("captioner", "echo", Echo, description="says its spec")
        >>> build("captioner", "echo:hello").caption([None, None])
        ['hello', 'hello']
    """
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if not scheme.isidentifier():
        raise ConfigError(f"scheme {scheme!r} must be a plain word")
    if scheme not in SCHEMES:
        SCHEMES.append(scheme)
    fams = (families,) if isinstance(families, str) else tuple(families)
    entry = Entry(role, scheme, fams, target, description or getattr(target, "__doc__", "") or "")
    ENTRIES.insert(0, entry)
    return entry


def load_plugins() -> None:
    """Let installed plug-ins register their backends (``factcap.backends`` entry points)."""
    call_group(ENTRY_POINT_GROUP)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``scheme:rest``; a bare ``rapidocr`` is its own scheme."""
    spec = spec.strip()
    if spec == "rapidocr":
        return "rapidocr", ""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme not in SCHEMES:
        load_plugins()
    if not sep or scheme not in SCHEMES or (not rest and scheme != "rapidocr"):
        raise ConfigError(
            f"bad model spec {spec!r}: expected hf:<hub id or dir>, openai:<model>, rapidocr, "
            f"tiny:<family> or bundled:<name> (see 'factcap models list')"
        )
    return scheme, rest


def entry_for(role: str, scheme: str, family: str) -> Entry:
    """The backend entry serving ``family`` checkpoints in ``role`` over ``scheme``."""
    load_plugins()
    candidates = [e for e in ENTRIES if e.role == role and e.scheme == scheme]
    for entry in candidates:
        if family in entry.families:
            return entry
    for entry in candidates:
        if entry.families == (ANY,):
            return entry
    served = sorted({f for e in candidates for f in e.families if f != ANY})
    raise ConfigError(
        f"no {role} backend for {scheme}: model_type {family!r}"
        + (f"; {role} supports: {', '.join(served)}" if served else "")
    )


def model_type(location: str) -> str:
    """The ``model_type`` of a checkpoint: from ``config.json`` in a local directory, else from
    the hub (or its local cache) via transformers' ``AutoConfig``."""
    local = Path(location).expanduser()
    if local.is_dir():
        cfg = local / "config.json"
        pipeline = local / "model_index.json"  # a diffusers pipeline
        if pipeline.exists() and not cfg.exists():
            return json.loads(pipeline.read_text(encoding="utf-8")).get("_class_name", "")
        if not cfg.exists():
            raise ModelNotAvailable(f"{local} has no config.json: not a transformers checkpoint")
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type", "")
    import transformers

    from factcap.backends.hf_common import load_pretrained

    return load_pretrained(transformers.AutoConfig, location).model_type


def bundled_dir(name: str) -> Path:
    """The folder of the checkpoint ``bundled:<name>`` inside the installed package."""
    from importlib import resources

    root = Path(str(resources.files("factcap") / "models"))
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()) or not (path / "config.json").is_file():
        shipped = (
            sorted(str(p.parent.relative_to(root)) for p in root.glob("*/*/config.json"))
            if root.is_dir()
            else []
        )
        raise ModelNotAvailable(
            f"no bundled model {name!r}; factcap ships: {', '.join(shipped) or 'none'}"
        )
    return path


def locate(spec: str) -> tuple[str, str]:
    """Turn ``tiny:<family>`` into the local ``hf`` directory (building it once) and
    ``bundled:<name>`` into the shipped one; pass others."""
    scheme, rest = parse_spec(spec)
    if scheme == "tiny":
        from factcap.backends import tiny

        return "hf", str(tiny.ensure(rest))
    if scheme == "bundled":
        return "hf", str(bundled_dir(rest))
    return scheme, rest


def build(role: str, spec: str, **options: Any) -> Any:
    """Build the backend for ``role`` from ``spec``; ``options`` go to its constructor.

    Raises :class:`ConfigError` for a spec no backend serves and :class:`ModelNotAvailable`
    when the weights are neither on disk nor reachable.
    """
    scheme, location = locate(spec)
    # one backend serves every t2i pipeline; diffusers hub repos have no transformers config
    family = model_type(location) if scheme == "hf" and role != "t2i" else ANY
    entry = entry_for(role, scheme, family)
    if isinstance(entry.target, str):
        module_name, class_name = entry.target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
    else:
        cls = entry.target
    try:
        backend = cls(location, **options)
    except (TypeError, ValueError) as err:
        # bad options, or a checkpoint that does not fit the role (e.g. a text-only LM as
        # captioner): a configuration problem, said in one line
        raise ConfigError(f"{role} {spec}: {err}") from err
    backend.name = spec
    return backend


def availability(spec: str) -> tuple[bool, str]:
    """Whether ``spec``'s weights can be had without a network, and where they are.

    Used by ``factcap models check``; loads no weights.
    """
    scheme, rest = parse_spec(spec)
    if scheme == "tiny":
        from factcap.backends import tiny

        if rest not in tiny.FAMILIES:
            return False, f"unknown tiny family; known: {', '.join(sorted(tiny.FAMILIES))}"
        path = tiny.cache_dir() / rest
        built = tiny.is_built(path)
        return True, f"{'built at' if built else 'will be built offline into'} {path}"
    if scheme == "openai":
        import importlib.util

        if importlib.util.find_spec("openai") is None:
            return False, "pip install 'factcap[openai]' (the openai SDK sends the requests)"
        return True, "remote: served by the OpenAI-compatible server in the config"
    if scheme == "bundled":
        try:
            return True, f"shipped with factcap ({bundled_dir(rest)})"
        except ModelNotAvailable as err:
            return False, str(err)
    if scheme == "rapidocr":
        import importlib.util

        ok = importlib.util.find_spec("rapidocr_onnxruntime") is not None
        return ok, "models inside the rapidocr-onnxruntime wheel" if ok else (
            "pip install 'factcap[ocr]'"
        )
    local = Path(rest).expanduser()
    if local.is_dir():
        ok = (local / "config.json").exists() or (local / "model_index.json").exists()
        return ok, f"local directory {local}" + ("" if ok else " (no config.json)")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False, "pip install 'factcap[hf]' to use hf: models"
    try:
        found = try_to_load_from_cache(rest, "config.json")
        if not isinstance(found, str):
            found = try_to_load_from_cache(rest, "model_index.json")
    except Exception:  # not a valid hub id either (e.g. a local path that does not exist)
        return False, f"{rest}: not a local directory, and not a hub id in the local cache"
    if isinstance(found, str):
        return True, f"in the Hugging Face cache ({Path(found).parent})"
    return False, "not on disk: download it (hf download " + rest + ") or use hf:/local/dir"


class BoundModel(NamedTuple):
    """A built backend and the batch size its calls are cut to."""

    backend: Any
    batch_size: int | None


def build_configured(config: Config, slot_name: str, rc: RoleConfig | None = None) -> BoundModel:
    """The backend of a config's model slot (``captioner:0``, ``llm`` ...; or ``rc`` in that
    slot's role), with the config's device and dtype (local models) or server settings
    (``openai:``), and its batch size."""
    rc = rc or config.model_slots()[slot_name]
    scheme, _ = parse_spec(rc.model)
    options = dict(rc.options)
    if scheme in ("hf", "tiny"):
        options.setdefault("device", rc.device or config.device)
        options.setdefault("dtype", rc.dtype or config.dtype)
    elif scheme == "openai":
        for key, value in config.openai.model_dump().items():
            options.setdefault(key, value)
    return BoundModel(
        build(role_of(slot_name), rc.model, **options), rc.batch_size or config.batch_size
    )
