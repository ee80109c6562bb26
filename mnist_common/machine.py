"""Which CPU a result was measured on: vendor, family, model and AVX-512, recorded beside every result.

The frameworks' ranking on the CPU changes with the processor (an AMD Zen 3 without AVX-512, a Zen 4 with it
and an Intel Xeon have each put a different framework ahead), and a virtual machine's model name ("AMD EPYC",
"Intel(R) Xeon(R) Processor") does not tell them apart; the family and model numbers and the AVX-512 flag do.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_identity(cpuinfo: Path = CPUINFO) -> dict[str, str | int | bool | None]:
    """The first processor's vendor, family, model, stepping and model name from /proc/cpuinfo, whether it has
    AVX-512 (avx512f) and the number of logical cores; None for what the file does not say (or where there is
    no such file: not Linux)."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if not line.strip():
                break  # the first processor's block ends at its blank line
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass

    def number(key: str) -> int | None:
        return int(fields[key]) if fields.get(key, "").isdigit() else None

    flags = fields.get("flags")
    return {
        "vendor": fields.get("vendor_id"),
        "family": number("cpu family"),
        "model": number("model"),
        "stepping": number("stepping"),
        "model_name": fields.get("model name") or platform.processor() or platform.machine() or None,
        "avx512": None if flags is None else "avx512f" in flags.split(),
        "cores": os.cpu_count(),
    }


def describe_cpu(identity: dict | None = None) -> str:
    """One line for a table's footnote: 'AuthenticAMD family 25 model 1 (AMD EPYC), 2 cores, no AVX-512'."""
    cpu = cpu_identity() if identity is None else identity
    avx512 = {True: "AVX-512", False: "no AVX-512", None: "AVX-512 unknown"}[cpu.get("avx512")]
    return (
        f"{cpu.get('vendor') or 'unknown vendor'} family {cpu.get('family')} model {cpu.get('model')} "
        f"({cpu.get('model_name') or 'unnamed'}), {cpu.get('cores')} cores, {avx512}"
    )
