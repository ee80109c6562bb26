"""The CPU identity recorded beside every result: read from /proc/cpuinfo's first processor."""

from pathlib import Path

from mnist_common.machine import cpu_identity, describe_cpu

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu avx avx2 fma

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: avx512f
"""


def test_the_first_processors_vendor_family_model_and_avx512_are_read(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ZEN3)
    cpu = cpu_identity(cpuinfo)
    assert (cpu["vendor"], cpu["family"], cpu["model"], cpu["stepping"]) == ("AuthenticAMD", 25, 1, 1)
    assert cpu["model_name"] == "AMD EPYC" and cpu["avx512"] is False  # the second block's avx512f is not read
    assert describe_cpu(cpu).startswith("AuthenticAMD family 25 model 1 (AMD EPYC), ")
    assert describe_cpu(cpu).endswith(" cores, no AVX-512")
    cpuinfo.write_text(ZEN3.replace("fma\n", "fma avx512f avx512bw\n", 1))
    assert describe_cpu(cpu_identity(cpuinfo)).endswith(" cores, AVX-512")


def test_no_cpuinfo_leaves_unknowns_instead_of_failing(tmp_path: Path):
    cpu = cpu_identity(tmp_path / "absent")
    assert cpu["vendor"] is None and cpu["avx512"] is None and cpu["cores"]
    assert "AVX-512 unknown" in describe_cpu(cpu)


def test_this_machine_is_described():
    cpu = cpu_identity()  # CI runs on Linux, where /proc/cpuinfo names all of it
    assert cpu["vendor"] and cpu["family"] is not None and isinstance(cpu["avx512"], bool)
