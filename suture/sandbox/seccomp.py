"""A seccomp filter for the local sandbox, as the raw BPF program bubblewrap's ``--seccomp FD`` loads.

It makes the syscalls a sandboxed program has no business with fail with EPERM: tracing other
processes, mounting, keyrings, new namespaces, kernel modules, bpf, perf, reboot, and the x32 ABI.

New namespaces can be asked for in three ways, all closed:

- ``unshare`` and ``setns``: EPERM whatever their arguments;
- ``clone``: its flags (the first argument on x86_64 and aarch64) are checked, and any of
  ``CLONE_NEWUSER``, ``CLONE_NEWNET``, ``CLONE_NEWNS``, ``CLONE_NEWPID``, ``CLONE_NEWUTS``,
  ``CLONE_NEWIPC``, ``CLONE_NEWCGROUP`` makes it EPERM; threads, ``fork`` and ``vfork`` pass;
- ``clone3``: its flags sit in a struct in user memory, which seccomp cannot read, so it answers
  ENOSYS — the kernel "does not have it" — and glibc (threads, ``posix_spawn``, ``fork``) falls back
  to ``clone``, whose flags are checked.

Built by hand (no maintained Python binding of libseccomp installs for this interpreter); only for
x86_64 and aarch64, else ``None``.
"""

from __future__ import annotations

import errno
import platform
import struct

_BLOCKED = {
    "x86_64": {
        "ptrace": 101, "syslog": 103, "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165,
        "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "init_module": 175,
        "delete_module": 176, "quotactl": 179, "kexec_load": 246, "add_key": 248, "request_key": 249,
        "keyctl": 250, "unshare": 272, "perf_event_open": 298, "open_by_handle_at": 304, "setns": 308,
        "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "bpf": 321,
        "userfaultfd": 323, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442,
    },
    "aarch64": {
        "ptrace": 117, "syslog": 116, "pivot_root": 41, "chroot": 51, "acct": 89, "mount": 40, "umount2": 39,
        "swapon": 224, "swapoff": 225, "reboot": 142, "init_module": 105, "delete_module": 106,
        "quotactl": 60, "kexec_load": 104, "add_key": 217, "request_key": 218, "keyctl": 219, "unshare": 97,
        "perf_event_open": 241, "open_by_handle_at": 265, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "kcmp": 272, "finit_module": 273, "bpf": 280, "userfaultfd": 282,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    },
}
#: syscall numbers of clone (flags checked) and clone3 (ENOSYS)
CLONE = {"x86_64": 56, "aarch64": 220}
CLONE3 = {"x86_64": 435, "aarch64": 435}
#: the namespace flags clone may not carry
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
_NS_MASK = sum(NAMESPACE_FLAGS.values())
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_EPERM = _ERRNO | errno.EPERM
_ENOSYS = _ERRNO | errno.ENOSYS
#: offsets in struct seccomp_data: nr, arch, then args[0] (its low 32 bits first: little-endian ABIs)
_NR, _ARCH, _ARG0_LO = 0, 4, 16


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def blocked_syscalls() -> list[str]:
    """Names of the syscalls the filter blocks on this machine whatever their arguments."""
    return sorted(_BLOCKED.get(platform.machine(), {}))


def number(name: str, arch: str | None = None) -> int:
    """The syscall number of ``name`` (one the filter knows) on ``arch`` (default: this machine)."""
    arch = arch or platform.machine()
    table = {**_BLOCKED.get(arch, {}), "clone": CLONE.get(arch), "clone3": CLONE3.get(arch)}
    if table.get(name) is None:
        raise KeyError(f"no syscall number for {name!r} on {arch}")
    return table[name]


def build_filter(arch: str | None = None) -> bytes | None:
    """The BPF program for ``arch`` (default: this machine), or ``None`` on an architecture without
    a table here."""
    arch = arch or platform.machine()
    table = _BLOCKED.get(arch)
    if not table:
        return None
    prog = [
        _insn(_LD_W_ABS, 0, 0, _ARCH),
        _insn(_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        _insn(_RET_K, 0, 0, _EPERM),  # another ABI: refuse everything
        _insn(_LD_W_ABS, 0, 0, _NR),
    ]
    if arch == "x86_64":
        prog += [_insn(_JGE_K, 0, 1, 0x40000000), _insn(_RET_K, 0, 0, _EPERM)]  # x32 ABI
    prog += [
        _insn(_JEQ_K, 0, 1, CLONE3[arch]), _insn(_RET_K, 0, 0, _ENOSYS),
        # clone: if not clone, skip the four checks below with the syscall number still loaded
        _insn(_JEQ_K, 0, 4, CLONE[arch]),
        _insn(_LD_W_ABS, 0, 0, _ARG0_LO),
        _insn(_JSET_K, 0, 1, _NS_MASK),
        _insn(_RET_K, 0, 0, _EPERM),
        _insn(_RET_K, 0, 0, _ALLOW),
    ]
    for nr in sorted(table.values()):
        prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, _EPERM)]
    prog.append(_insn(_RET_K, 0, 0, _ALLOW))
    return b"".join(prog)
