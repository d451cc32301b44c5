"""Validated configuration: presets (YAML files shipped with factcap) plus user overrides.

A config file is YAML. It may name a ``preset:`` to start from; every key it sets then
overrides the preset's: nested mappings merge, lists replace, and a role that names a
different ``model`` replaces the preset's role whole (its options belonged to the old model).
Unknown keys are errors, so a typo never passes silently. Prompt files are resolved relative
to the config file.

>>> cfg = load_config(preset="tiny", overrides={"batch_size": 2})
>>> cfg.batch_size, cfg.captioners[0].model
(2, 'tiny:blip')
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from factcap.errors import ConfigError
from factcap.media import media_kinds
from factcap.prompts import TEMPLATES
from factcap.prompts.style import Style, selectable, style_registry
from factcap.roles import ROLES, slot

DTYPES = ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16")
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
#: Config keys of the roles that take one model (``captioners`` takes a list).
ROLE_KEYS = tuple(r.config_key for r in ROLES.values() if not r.many)
#: What ``factcap evaluate`` scores by default: metrics that need no reference captions
#: (``chair`` then reports only ``chair_ov_i``, against the pipeline's own detector verdicts).
DEFAULT_METRICS = ("clip_score", "vqa_score", "chair", "self_retrieval")
#: Added to the defaults when ``--references`` gives reference captions.
REFERENCE_METRICS = ("capture", "bleu", "rouge_l", "cider")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoleConfig(_Strict):
    """One model role. ``device``/``dtype``/``batch_size`` default to the top-level values;
    ``options`` go to the backend's constructor (e.g. ``max_new_tokens``, ``box_threshold``).

    ``num_gpus``, ``num_cpus`` and ``replicas`` are used by the Ray executor only
    (``factcap caption --executor ray``): each role runs in its own pool of ``replicas``
    actors, each reserving ``num_gpus`` GPUs (a fraction shares a GPU between roles) and
    ``num_cpus`` CPUs. ``num_cpus: null`` (the default) means 1 CPU, or an equal share of
    what the cluster has left when that is less, so that every pool fits.
    """

    model: str
    device: str | None = Field(default=None, pattern=DEVICE_PATTERN)
    dtype: Literal[DTYPES] | None = None  # type: ignore[valid-type]
    batch_size: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)
    num_gpus: float = Field(default=0.0, ge=0.0)
    num_cpus: float | None = Field(default=None, ge=0.0)
    replicas: int = Field(default=1, ge=1)


class LLMConfig(RoleConfig):
    """The LLM that extracts claims and writes the final captions."""

    max_new_tokens: int = Field(default=384, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)


class VerifyConfig(_Strict):
    """How checker outputs become verdicts (see ``factcap.pipeline.verify``)."""

    enabled: bool = True
    supported_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    refuted_threshold: float = Field(default=0.35, ge=0.0, le=1.0)
    text_match_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    max_claims: int = Field(default=32, ge=1)
    vqa_rescue: bool = True
    """Whether the VQA model's yes (at ``supported_threshold``) makes an object the detector
    did not find ``uncertain`` rather than ``refuted``; off for a detector trusted more than
    the VQA model."""
    alternatives: bool = True
    """Ask an attribute claim's alternatives too (the other values of its set: "Is the cup
    blue?" beside "Is the cup red?"): supported only when the stated value wins by
    ``margin``, refuted when another does."""
    margin: float = Field(default=0.2, ge=0.0, le=1.0)
    corrections: bool = True
    """A refuted attribute whose object stands and whose winning alternative is clear is
    corrected (verdict ``corrected``) instead of removed."""
    value_sets: dict[str, list[str]] = Field(default_factory=dict)
    """Replace shipped value sets by attribute (``colour``, ``size``, ``material``) or add
    one (:data:`factcap.text.attributes.VALUE_SETS`)."""

    def sets(self) -> dict[str, tuple[str, ...]]:
        """The value sets the checks compare (the shipped ones with ``value_sets`` over them).

        >>> VerifyConfig(value_sets={"size": ["small", "large"]}).sets()["size"]
        ('small', 'large')
        """
        from factcap.text.attributes import VALUE_SETS

        return {**VALUE_SETS, **{k: tuple(v) for k, v in self.value_sets.items()}}

    @model_validator(mode="after")
    def _ordered(self) -> VerifyConfig:
        if self.refuted_threshold >= self.supported_threshold:
            raise ValueError(
                f"refuted_threshold ({self.refuted_threshold}) must be below "
                f"supported_threshold ({self.supported_threshold})"
            )
        return self


class LimitsConfig(_Strict):
    """Limits on inputs; an image over a limit becomes an error record."""

    max_pixels: int = Field(default=40_000_000, ge=1)
    max_file_mb: float = Field(default=64.0, gt=0)

    def decode_limits(self) -> Any:
        """These limits as the :class:`~factcap.images.DecodeLimits` the decoder checks.

        >>> LimitsConfig(max_file_mb=1).decode_limits().max_file_bytes
        1048576
        """
        from factcap.images import DecodeLimits

        return DecodeLimits(
            max_pixels=self.max_pixels, max_file_bytes=int(self.max_file_mb * 1024 * 1024)
        )


class MemoryConfig(_Strict):
    """How much of the job is in memory at once. ``mode: normal`` keeps every model loaded
    and overlaps reading, the model stages and writing; ``mode: low`` holds one model at a
    time, running each stage over ``chunk`` items before the next model loads, with the
    items kept on disk between stages (:mod:`factcap.engine.stage_major`): slower, but the
    memory is about the largest model's. Records are the same in both modes.

    ``check`` (default true): a caption job whose models would not fit this machine's
    memory in its mode and dtype is refused before any loads, with the modes that fit
    (:mod:`factcap.backends.footprint`; ``--no-memory-check`` sets it false)."""

    mode: Literal["normal", "low"] = "normal"
    chunk: int = Field(default=128, ge=1)
    check: bool = True


class OpenAIConfig(_Strict):
    """The OpenAI-compatible server used by ``openai:`` models (sent by the ``openai`` SDK).

    ``base_url`` and ``api_key`` default to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
    ``cache`` answers deterministic (temperature 0) requests from a response cache in
    ``cache_dir`` (default ``$FACTCAP_CACHE/requests``), so a resumed job does not pay twice.
    Retries wait ``backoff * 2**n`` seconds, of which a ``jitter`` fraction is random.

    ``api_type: azure`` talks to Azure OpenAI's deployment API: ``base_url`` is then the
    resource endpoint (``https://<resource>.openai.azure.com``, else ``AZURE_OPENAI_ENDPOINT``),
    the model after ``openai:`` is the deployment name, ``api_version`` (else
    ``OPENAI_API_VERSION``) is required, and the key (else ``AZURE_OPENAI_API_KEY``) goes in the
    ``api-key`` header. ``api_version`` is for Azure only.

    >>> OpenAIConfig(api_type="azure", api_version="2024-10-21").api_type
    'azure'
    """

    api_type: Literal["openai", "azure"] = "openai"
    api_version: str | None = Field(default=None, min_length=1)
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=8, ge=1)
    max_retries: int = Field(default=2, ge=0)
    backoff: float = Field(default=0.5, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1)
    cache: bool = True
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _azure_only(self) -> OpenAIConfig:
        if self.api_version is not None and self.api_type != "azure":
            raise ValueError("api_version is for api_type: azure (Azure OpenAI) only")
        return self


class AltTextConfig(_Strict):
    """The input's web alt-text as one more proposal (``model: alt_text``).

    ``field`` names where it is read: a manifest or Parquet column, a tar member's extension
    (``txt``), or a key of a tar sample's ``.json`` member; ``null`` switches alt-text off.
    An item without the field is captioned as before. ``unconfirmed_names``: what the caption
    does with a name, place, brand or date that only the alt-text gives and nothing in the
    image confirms: ``label`` keeps it as the alt-text's label ("labelled as ..."), ``drop``
    leaves it out.

    >>> AltTextConfig().field, AltTextConfig().unconfirmed_names
    ('alt_text', 'label')
    """

    field: str | None = Field(default="alt_text", min_length=1)
    unconfirmed_names: Literal["label", "drop"] = "label"
    max_chars: int = Field(default=1000, ge=1)


class RegionsConfig(_Strict):
    """Region captions and the caption graph (``--regions``): each supported object's boxes,
    after non-maximum suppression (IoU above ``iou_nms``), largest first, at least
    ``min_area`` of the image, up to ``max``; cropped with ``padding`` (of the box's size) on
    every side; ``relations``: spatial relations between up to ``max_relations`` pairs of
    regions, each with a sentence and a VQA check on the pair's union crop.

    >>> RegionsConfig().max, RegionsConfig().enabled
    (8, False)
    """

    enabled: bool = False
    max: int = Field(default=8, ge=1, le=64)
    min_area: float = Field(default=0.01, ge=0.0, le=1.0)
    iou_nms: float = Field(default=0.5, ge=0.0, le=1.0)
    padding: float = Field(default=0.1, ge=0.0, le=2.0)
    relations: bool = True
    max_relations: int = Field(default=12, ge=0)


class ExpertConfig(_Strict):
    """The detection expert (:mod:`factcap.pipeline.expert`): the detector looks for every
    name of ``vocabulary`` (a shipped list: ``coco80``, ``shapes``; a file of one name per
    line; or the names), and each name found with a score of at least ``threshold`` that no
    claim mentions becomes an object claim (``origin: expert``), checked like any claim and
    offered to compose when it holds: at most ``max_per_image``, the best first. Each such
    object is also given a value of every attribute in ``attributes`` (``size``,
    ``colour``, ...: the value the VQA model picks among ``verify.value_sets``).
    ``queries_per_call`` names go to the detector at once (Grounding DINO reads a limited
    prompt).

    >>> ExpertConfig(enabled=True, vocabulary=["dog", "cat"]).names()
    ['dog', 'cat']
    >>> len(ExpertConfig(vocabulary="coco80").names())
    80
    """

    enabled: bool = False
    vocabulary: list[str] | str = "coco80"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    max_per_image: int = Field(default=5, ge=1)
    attributes: list[str] = Field(default_factory=list)
    queries_per_call: int = Field(default=32, ge=1)

    @field_validator("vocabulary")
    @classmethod
    def _readable(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str) and value not in VOCABULARIES and not Path(value).is_file():
            raise ValueError(
                f"vocabulary {value!r} is neither a shipped list ({', '.join(VOCABULARIES)}) "
                "nor a file"
            )
        if isinstance(value, list) and not [v for v in value if v.strip()]:
            raise ValueError("the vocabulary is empty")
        return value

    def names(self) -> list[str]:
        """The vocabulary's names, in order, each once."""
        value = self.vocabulary
        if isinstance(value, str):
            path = _vocabulary_file(value) if value in VOCABULARIES else Path(value)
            lines = path.read_text(encoding="utf-8").splitlines()
            value = [line for line in lines if not line.lstrip().startswith("#")]
        return list(dict.fromkeys(" ".join(v.split()) for v in value if v.strip()))


#: The shipped vocabularies of the detection expert (``text/data/vocab/<name>.txt``).
VOCABULARIES = ("coco80", "shapes")


def _vocabulary_file(name: str) -> Path:
    return Path(str(resources.files("factcap") / "text" / "data" / "vocab" / f"{name}.txt"))


class QuestionConfig(_Strict):
    """Question-guided captions (``--question``; :mod:`factcap.pipeline.question`).

    ``text`` is a question asked of every item; ``field`` names where an item's own question
    is read (a manifest or Parquet column, a tar member's extension, or a key of a tar
    sample's ``.json`` member), and an item's own question wins over ``text``. An item with a
    question gets the ``question`` caption style, a question-guided proposal from each
    captioner that takes a prompt, and the record field ``question`` (its text and answer check); one
    without is captioned as before. Both unset (the default): no question stages at all.
    ``max_chars``: a longer question is cut (a note says so).

    >>> QuestionConfig().enabled, QuestionConfig(field="question").enabled
    (False, True)
    """

    text: str | None = Field(default=None, min_length=1)
    field: str | None = Field(default=None, min_length=1)
    max_chars: int = Field(default=500, ge=1)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the question is empty")
        return value

    @property
    def enabled(self) -> bool:
        """Whether any item can have a question."""
        return bool(self.text or self.field)


#: How a proposal can be ranked, and the role that scores it.
RANKERS = {"clip_score": "embedder", "vqa_score": "vqa"}


class ProposalsConfig(_Strict):
    """Rank the captioners' proposals before claims are extracted: every proposal gets a
    score against its image (``clip_score``: the embedder's cosine, long text split into
    pieces that fit; ``vqa_score``: the VQA model's P(yes) that the image shows it); only the
    ``keep_top`` best with a score of at least ``min_score`` go on. The record keeps every
    proposal with its score and ``kept``. OCR text and alt-text are scored but always kept
    (their claims are checked one by one). ``rank_by: null`` (the default) ranks nothing.

    >>> ProposalsConfig(rank_by="clip_score", keep_top=2).ranker_role()
    'embedder'
    """

    rank_by: Literal["clip_score", "vqa_score"] | None = None
    keep_top: int | None = Field(default=None, ge=1)
    min_score: float | None = None

    def ranker_role(self) -> str | None:
        """The role whose model scores the proposals, or None when nothing is ranked."""
        return RANKERS[self.rank_by] if self.rank_by else None


class EvaluateConfig(_Strict):
    """``factcap evaluate``: which metrics, and options per metric (e.g. ``clip_image_score:
    {samples: 2, seed: 0}``).

    >>> EvaluateConfig().default_metrics(references=False)
    ['clip_score', 'vqa_score', 'chair', 'self_retrieval']
    """

    metrics: list[str] | None = Field(default=None, min_length=1)
    """``None``: :data:`DEFAULT_METRICS`, plus :data:`REFERENCE_METRICS` when references are
    given."""
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    batch_size: int = Field(default=16, ge=1)

    def default_metrics(self, references: bool) -> list[str]:
        """The metrics to run when the command line names none."""
        if self.metrics is not None:
            return list(self.metrics)
        return list(DEFAULT_METRICS) + (list(REFERENCE_METRICS) if references else [])


class Config(BaseModel):
    """Everything a :class:`factcap.Pipeline` needs. Besides the fields below, each media kind
    with settings has its section under its ``config_key`` (``assets``: the 3D asset's
    :class:`~factcap.media.asset.AssetsConfig`), read as ``config.assets``.

    >>> load_config(preset="tiny", overrides={"assets": {"views": 3}}).assets.views
    3
    """

    # media kinds' sections arrive as extra keys; _media_sections validates them (or says
    # which key is unknown, as a strict model would)
    model_config = ConfigDict(extra="allow")

    preset: str | None = None
    captioners: list[RoleConfig] = Field(min_length=1)
    llm: LLMConfig
    detector: RoleConfig | None = None
    vqa: RoleConfig | None = None
    ocr: RoleConfig | None = None
    embedder: RoleConfig | None = None
    t2i: RoleConfig | None = None
    text_embedder: RoleConfig | None = None
    judge: RoleConfig | None = None
    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    dtype: Literal[DTYPES] = "auto"  # type: ignore[valid-type]
    batch_size: int = Field(default=4, ge=1)
    # local executor: batches in the model stages at once (each model one call at a time);
    # 2 lets a batch wait on a remote server while another runs the local models
    workers: int = Field(default=1, ge=1, le=16)
    styles: list[str] = Field(default_factory=lambda: ["detailed"], min_length=1)
    instruction: str | None = None
    prompts: dict[str, str] = Field(default_factory=dict)
    custom_styles: dict[str, str] = Field(default_factory=dict)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    alt_text: AltTextConfig = Field(default_factory=AltTextConfig)
    proposals: ProposalsConfig = Field(default_factory=ProposalsConfig)
    regions: RegionsConfig = Field(default_factory=RegionsConfig)
    question: QuestionConfig = Field(default_factory=QuestionConfig)
    expert: ExpertConfig = Field(default_factory=ExpertConfig)

    @model_validator(mode="after")
    def _media_sections(self) -> Config:
        sections = media_sections()
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        errors: list[Any] = []
        for key in extra:
            if key not in sections:
                errors.append(
                    {"type": "extra_forbidden", "loc": (key,), "input": extra[key], "ctx": {}}
                )
        for key, settings in sections.items():
            try:
                extra[key] = settings.model_validate(extra.get(key) or {})
            except ValidationError as err:
                errors += [{**e, "loc": (key, *e["loc"])} for e in err.errors()]
        if errors:
            raise ValidationError.from_exception_data("Config", errors)
        return self

    @model_validator(mode="after")
    def _ranker_configured(self) -> Config:
        role = self.proposals.ranker_role()
        if role is not None and getattr(self, ROLES[role].config_key) is None:
            raise ValueError(
                f"proposals.rank_by: {self.proposals.rank_by} scores with the {role} model; "
                f"configure {ROLES[role].config_key}"
            )
        return self

    @model_validator(mode="after")
    def _known_styles_and_prompts(self) -> Config:
        styles = self.style_registry()  # reads the custom style files: errors say which
        choices = selectable(styles)
        unknown = [s for s in self.styles if s not in choices]
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; choose from {choices}")
        self.styles = list(dict.fromkeys(self.styles))
        names = [*TEMPLATES, *(f"style_{n}" for n in styles)]
        unknown = sorted(set(self.prompts) - set(names))
        if unknown:
            raise ValueError(f"unknown prompt name(s) {unknown}; known: {names}")
        for name, path in self.prompts.items():
            if not Path(path).is_file():
                raise ValueError(f"prompt file for {name!r} not found: {path}")
        return self

    def style_registry(self) -> dict[str, Style]:
        """Every style this config can use (shipped, ``custom_styles``, prompt overrides)."""
        return style_registry(self.custom_styles, self.prompts)

    def pipeline_models(self) -> dict[str, Any]:
        """The spec of each pipeline role's model(s) and of the proposal ranker, as records
        list them (``models``)."""
        names: dict[str, Any] = {}
        ranker = self.proposals.ranker_role()
        for role in ROLES.values():
            value = getattr(self, role.config_key)
            used = "caption" in role.used_by or role.name == ranker
            if used and value is not None:
                names[role.config_key] = [rc.model for rc in value] if role.many else value.model
        return names

    def model_slots(self) -> dict[str, RoleConfig]:
        """Every configured model by slot name (``captioner:0``, ``llm``, ...), in the order
        of :data:`factcap.roles.ROLES`."""
        slots: dict[str, RoleConfig] = {}
        for role in ROLES.values():
            value = getattr(self, role.config_key)
            if role.many:
                slots.update({slot(role.name, i): rc for i, rc in enumerate(value)})
            elif value is not None:
                slots[role.name] = value
        return slots


def media_sections() -> dict[str, type[BaseModel]]:
    """The config section of each media kind that has settings, by key.

    >>> sorted(media_sections())
    ['assets']
    """
    return {k.config_key: k.settings for k in media_kinds().values() if k.config_key and k.settings}


def preset_names() -> list[str]:
    """The presets shipped with factcap."""
    folder = resources.files("factcap") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a shipped preset."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    text = (resources.files("factcap") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    data["preset"] = name
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        replaces_model = (
            key in ROLE_KEYS
            and isinstance(value, dict)
            and isinstance(old, dict)
            and value.get("model", old.get("model")) != old.get("model")
        )
        if isinstance(value, dict) and isinstance(old, dict) and not replaces_model:
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    default_preset: str | None = "tiny",
) -> Config:
    """Build a :class:`Config` from a preset, a YAML file and overrides, in that order.

    The base is ``preset``, else the ``preset:`` key of the file or of ``overrides``, else
    (with no file) ``default_preset``. Relative prompt paths in a file are taken relative to the file.
    """
    data: dict[str, Any] = _read_yaml(Path(path)) if path else {}
    here = Path(path).resolve().parent if path else None
    for key in ("prompts", "custom_styles"):  # files named relative to the config file
        if here and isinstance(data.get(key), dict):
            data[key] = {k: str(here / v) for k, v in data[key].items()}
    named = preset or data.get("preset") or (overrides or {}).get("preset")
    base_name = named or (default_preset if not path else None)
    base = preset_dict(base_name) if base_name else {}
    merged = _merge(_merge(base, data), overrides or {})
    if base_name:
        merged["preset"] = base_name
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        source = path or f"preset {base_name}"
        raise ConfigError(f"invalid config ({source}): {problems}") from None
