"""A seccomp filter for the local sandbox, as the raw BPF program bubblewrap's ``--seccomp FD`` loads.

It makes the syscalls a sandboxed program has no business with fail with EPERM: tracing other
processes, mounting, keyrings, new namespaces, kernel modules, bpf, perf, reboot, and the x32 ABI.
Built by hand (no libseccomp dependency); only for x86_64 and aarch64, else ``None``.
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
        "userfaultfd": 323, "fsopen": 430, "fsmount": 432, "move_mount": 429,
    },
    "aarch64": {
        "ptrace": 117, "syslog": 116, "pivot_root": 41, "chroot": 51, "acct": 89, "mount": 40, "umount2": 39,
        "swapon": 224, "swapoff": 225, "reboot": 142, "init_module": 105, "delete_module": 106,
        "quotactl": 60, "kexec_load": 104, "add_key": 217, "request_key": 218, "keyctl": 219, "unshare": 97,
        "perf_event_open": 241, "open_by_handle_at": 265, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "kcmp": 272, "finit_module": 273, "bpf": 280, "userfaultfd": 282,
    },
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000 | errno.EPERM


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def blocked_syscalls() -> list[str]:
    """Names of the syscalls the filter blocks on this machine."""
    return sorted(_BLOCKED.get(platform.machine(), {}))


def build_filter() -> bytes | None:
    """The BPF program, or ``None`` on an architecture without a table here."""
    arch = platform.machine()
    table = _BLOCKED.get(arch)
    if not table:
        return None
    prog = [
        _insn(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _insn(_JEQ_K, 1, 0, _AUDIT_ARCH[arch]),
        _insn(_RET_K, 0, 0, _ERRNO),  # another ABI: refuse everything
        _insn(_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if arch == "x86_64":
        prog += [_insn(_JGE_K, 0, 1, 0x40000000), _insn(_RET_K, 0, 0, _ERRNO)]  # x32 ABI
    for nr in sorted(table.values()):
        prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, _ERRNO)]
    prog.append(_insn(_RET_K, 0, 0, _ALLOW))
    return b"".join(prog)
