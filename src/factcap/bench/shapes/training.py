"""What the world's trainers share: seeding, the optimisation loop, sizes of a training run.

Each role's trainer (``train_<role>.py``) exposes ``train(out, *, size, seed) -> dict`` that
writes a complete transformers checkpoint directory into ``out`` and returns its statistics.
``size`` is ``"full"`` (the benchmark's models) or ``"smoke"`` (seconds; for tests: the same
code and the same architectures, far fewer steps and a narrower model). A trainer's ``train``
is :meth:`TrainingRun.start`, the model built, :meth:`TrainingRun.fit` over its
:class:`Phase` list, the files saved, and :meth:`TrainingRun.finish`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SIZES = ("full", "smoke")


# Mean and deviation of OpenAI CLIP's images, which the BLIP, CLIP and OWLv2 processors use.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"unknown training size {size!r}; choose from {', '.join(SIZES)}")
    return size


def plan_for(
    plans: dict[str, dict[str, Any]], size: str, steps: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """A copy of ``plans[size]`` with ``overrides`` (and ``steps``, unless None) applied.

    >>> plan_for({"full": {"steps": 9, "lr": 0.1}, "smoke": {}}, "full", steps=3, lr=0.2)
    {'steps': 3, 'lr': 0.2}
    """
    plan = dict(plans[check_size(size)], **overrides)
    if steps is not None:
        plan["steps"] = steps
    return plan


def add_held_out(
    stats: dict[str, Any],
    evaluate: Callable[..., dict[str, Any]],
    out: Path,
    *,
    size: str,
    seed: int,
    eval_n: int | None,
    log: Callable[[str], None],
) -> None:
    """Set ``stats["held_out"]`` to ``evaluate(out, n=eval_n, seed=seed)`` and log it; when
    ``eval_n`` is None, at full size only, on ``evaluate``'s default number of samples.

    >>> stats = {}
    >>> add_held_out(stats, lambda out, n=5, seed=0: {"n": n}, Path("m"), size="full",
    ...              seed=0, eval_n=None, log=print)
    held-out: {'n': 5}
    >>> add_held_out(stats, lambda out, n=5, seed=0: {"n": n}, Path("m"), size="smoke",
    ...              seed=0, eval_n=None, log=print)
    >>> stats
    {'held_out': {'n': 5}}
    """
    if eval_n == 0 or (eval_n is None and size != "full"):
        return
    chosen = {} if eval_n is None else {"n": eval_n}
    stats["held_out"] = evaluate(out, seed=seed, **chosen)
    log(f"held-out: {stats['held_out']}")


def scene_pixels(scenes: Sequence[Any]) -> torch.Tensor:
    """The scenes as ``pixel_values`` at their own size (no resize or pad), rescaled to
    [0, 1] and normalised with CLIP's mean and deviation, as the processors would."""
    arrays = np.stack([np.asarray(s.render(), dtype=np.float32) for s in scenes])
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    return (images - mean) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# What :func:`fit` trains on: an iterator of keyword batches, or a function of the step number.
BatchSource = Iterator[dict[str, Any]] | Callable[[int], dict[str, Any]]
LossFn = Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor]


def fit(
    model: torch.nn.Module,
    batches: BatchSource,
    steps: int,
    lr: float,
    loss_fn: LossFn | None = None,
    warmup: float = 0.05,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
) -> dict[str, Any]:
    """Train ``model`` for ``steps`` AdamW steps with linear warm-up and cosine decay.

    ``batches`` is an iterator of keyword batches, or a function of the step number returning
    one. ``loss_fn(model, batch)`` defaults to ``model(**batch).loss``. Returns the seconds
    spent and the mean loss of the first and last tenth of the steps.

    >>> model = torch.nn.Linear(2, 1)
    >>> data = lambda step: {"x": torch.ones(4, 2)}
    >>> stats = fit(model, data, 20, 0.1, loss_fn=lambda m, b: (m(b["x"]) - 3).pow(2).mean())
    >>> stats["loss_last"] < stats["loss_first"]
    True
    """
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warm = max(1, int(steps * warmup))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    compute = loss_fn or (lambda m, b: m(**b).loss)
    next_batch = batches if callable(batches) else (lambda _step, it=batches: next(it))
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        loss = compute(model, next_batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            log(f"step {step + 1}/{steps} loss {recent:.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    tenth = max(1, steps // 10)
    return {
        "steps": steps,
        "train_s": round(time.perf_counter() - start, 2),
        "loss_first": round(sum(losses[:tenth]) / tenth, 4),
        "loss_last": round(sum(losses[-tenth:]) / tenth, 4),
    }


@dataclass(frozen=True)
class Phase:
    """One stretch of :func:`fit` in a training run: ``steps`` steps at ``lr`` on ``batches``
    with ``loss_fn``, logging ``logs`` progress lines. A ``name``d phase prefixes its log lines
    with the name, and its statistics go under that name in the run's."""

    batches: BatchSource
    steps: int
    lr: float
    loss_fn: LossFn | None = None
    name: str | None = None
    logs: int = 10


def _prefixed(log: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda message: log(f"{prefix}: {message}")


@dataclass(frozen=True)
class TrainingRun:
    """One call of a trainer's ``train``: where it writes, its plan, size and seed, how many
    held-out samples it evaluates, where it logs, and when it started (after seeding)."""

    out: Path
    plan: dict[str, Any]
    size: str
    seed: int
    eval_n: int | None
    log: Callable[[str], None]
    started: float

    @classmethod
    def start(
        cls,
        plans: dict[str, dict[str, Any]],
        out: Path,
        *,
        size: str,
        seed: int,
        steps: int | None,
        eval_n: int | None,
        log: Callable[[str], None],
        **plan_overrides: Any,
    ) -> TrainingRun:
        """The plan (:func:`plan_for`), ``out`` created, and every generator seeded
        (:func:`seed_everything`): build the model after this, so that its initial weights
        follow from ``seed``."""
        plan = plan_for(plans, size, steps, **plan_overrides)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        seed_everything(seed)
        return cls(out, plan, size, seed, eval_n, log, time.perf_counter())

    def fit(self, model: torch.nn.Module, *phases: Phase) -> dict[str, Any]:
        """Train ``model`` through ``phases`` in order; the last phase's :func:`fit` statistics,
        each earlier phase's under its name, and ``train_s`` the seconds of them all.

        >>> import tempfile
        >>> run = TrainingRun.start({"smoke": {}}, Path(tempfile.mkdtemp()), size="smoke",
        ...                         seed=0, steps=None, eval_n=None, log=print)
        >>> x = {"x": torch.ones(4, 2)}
        >>> loss = lambda m, b: (m(b["x"]) - 3).pow(2).mean()
        >>> stats = run.fit(torch.nn.Linear(2, 1), Phase(lambda step: x, 2, 0.1, loss, "warm", 1),
        ...                 Phase(lambda step: x, 3, 0.1, loss, logs=1))  # doctest: +ELLIPSIS
        warm: step 2/2 loss ...
        step 3/3 loss ...
        >>> list(stats), stats["warm"]["steps"]
        (['steps', 'train_s', 'loss_first', 'loss_last', 'warm'], 2)
        """
        if not phases or any(phase.name is None for phase in phases[:-1]):
            raise ValueError("fit needs phases, each but the last named (its statistics' key)")
        done = []
        for phase in phases:
            log = self.log if phase.name is None else _prefixed(self.log, phase.name)
            done.append(
                fit(
                    model,
                    phase.batches,
                    phase.steps,
                    phase.lr,
                    loss_fn=phase.loss_fn,
                    log=log,
                    log_every=max(1, phase.steps // phase.logs),
                )
            )
        *earlier, stats = done
        for phase, seen in zip(phases[:-1], earlier, strict=True):
            stats[str(phase.name)] = seen
        stats["train_s"] = round(sum(s["train_s"] for s in done), 2)
        return stats

    def finish(
        self,
        stats: dict[str, Any],
        evaluate: Callable[..., dict[str, Any]],
        **extra: Any,
    ) -> dict[str, Any]:
        """``stats`` with the run's size and plan, then ``extra``, then the held-out quality of
        the saved model (:func:`add_held_out` with ``evaluate``): call it once ``out`` holds
        every file of the model."""
        stats |= {"size": self.size, "plan": self.plan, **extra}
        add_held_out(
            stats,
            evaluate,
            self.out,
            size=self.size,
            seed=self.seed,
            eval_n=self.eval_n,
            log=self.log,
        )
        return stats
