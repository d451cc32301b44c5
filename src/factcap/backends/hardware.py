"""What this machine has, read without importing torch: the CPU's instruction-set flags (does
it compute bfloat16 natively?), its memory, and the GPUs' memory (torch, only when asked).

``auto`` dtype on a CPU follows :func:`native_bf16`: bfloat16 where the CPU has bf16
instructions (x86 ``avx512_bf16`` / ``amx_bf16``, Arm ``bf16``), where it halves the weights'
memory and runs the matrix products about twice as fast; float32 elsewhere, where bf16 is
emulated and slower. ``FACTCAP_CPU_BF16=0`` (or ``1``) overrides what the flags say; the test
suite sets 0 so that ``auto`` gives the same dtype on every CI machine.

>>> native_bf16({"avx2", "avx512f", "avx512_bf16"}), native_bf16({"avx2", "avx512f"})
(True, False)
>>> native_bf16({"fp", "asimd", "bf16"})
True
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path

#: CPU flags (as /proc/cpuinfo spells them) of native bfloat16 arithmetic.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")

#: A function that returns the CPU's flags; injectable, so the rule can be tested anywhere.
FlagReader = Callable[[], Iterable[str]]


@cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (:func:`flags_in`), read from ``/proc/cpuinfo`` once; empty
    where that file does not exist (macOS, Windows)."""
    try:
        return flags_in(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return frozenset()


def flags_in(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first CPU in a ``/proc/cpuinfo`` text: x86's ``flags`` line,
    Arm's ``Features``.

    >>> sorted(flags_in("processor : 0\\nflags : fpu avx512_bf16 sse\\n"))
    ['avx512_bf16', 'fpu', 'sse']
    >>> sorted(flags_in("Features : fp asimd bf16\\n"))
    ['asimd', 'bf16', 'fp']
    """
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(flags: Iterable[str]) -> bool:
    """Whether a CPU with these ``flags`` computes bfloat16 natively (:data:`BF16_FLAGS`)."""
    return bool(set(flags) & set(BF16_FLAGS))


def cpu_bf16(
    read_flags: FlagReader = cpu_flags, env: Mapping[str, str] | None = None
) -> tuple[bool, str]:
    """(whether ``auto`` should use bfloat16 on this CPU, why), from ``FACTCAP_CPU_BF16`` in
    ``env`` (default: the process environment) when set, else from the flags ``read_flags``
    returns.

    >>> cpu_bf16(lambda: {"avx512_bf16"}, {})[0], cpu_bf16(lambda: {"sse4_2"}, {})[1]
    (True, 'this CPU has no native bf16 instructions (avx512_bf16, amx_bf16 or bf16)')
    >>> cpu_bf16(lambda: {"avx512_bf16"}, {"FACTCAP_CPU_BF16": "0"})
    (False, 'FACTCAP_CPU_BF16=0')
    """
    forced = (os.environ if env is None else env).get("FACTCAP_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"FACTCAP_CPU_BF16={forced}"
    found = sorted(set(read_flags()) & set(BF16_FLAGS))
    if found:
        return True, f"this CPU has native bf16 ({', '.join(found)})"
    return False, f"this CPU has no native bf16 instructions ({', '.join(BF16_FLAGS[:2])} or bf16)"


def auto_dtype(
    device_type: str, read_flags: FlagReader = cpu_flags, env: Mapping[str, str] | None = None
) -> str:
    """What ``dtype: auto`` means on a device of type ``device_type``: float16 on CUDA,
    bfloat16 on a CPU with native bf16, float32 elsewhere (MPS included); ``env`` as for
    :func:`cpu_bf16`.

    >>> auto_dtype("cuda"), auto_dtype("cpu", lambda: {"amx_bf16"}, {}), auto_dtype("mps")
    ('float16', 'bfloat16', 'float32')
    """
    if device_type == "cuda":
        return "float16"
    if device_type == "cpu" and cpu_bf16(read_flags, env)[0]:
        return "bfloat16"
    return "float32"


def total_memory() -> int:
    """Bytes of RAM this machine has (``MemTotal``)."""
    return _meminfo("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    """Bytes of RAM a new process can have now (``MemAvailable``: free plus reclaimable)."""
    return _meminfo("MemAvailable") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _meminfo(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cuda_memory() -> list[tuple[int, int]]:
    """(free, total) bytes of each CUDA device; empty without one (imports torch)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.mem_get_info(i) for i in range(torch.cuda.device_count())]


def trim_heap() -> None:
    """Give the memory the C heap holds free back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere). A released model's tensors, and the float32 buffers a cast read through,
    otherwise stay in the process's resident memory as free heap pages."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: musl has no malloc_trim
        ctypes.CDLL(None).malloc_trim(0)


def describe() -> str:
    """One line: the CPU, its bf16 support and the RAM, e.g. for ``factcap models check``."""
    bf16, why = cpu_bf16()
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {total_memory() / 2**30:.1f} GiB RAM "
        f"({available_memory() / 2**30:.1f} available); {why}"
    )
