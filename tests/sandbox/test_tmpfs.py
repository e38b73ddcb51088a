"""The sandbox's ``/tmp`` and ``/work`` are sized tmpfs mounts carved out of the memory budget; a
write past them is an error inside the sandbox, the host and the session unharmed. Files go in and
out through the worker; the host keeps its copies private (0700 dir, 0600 files)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from .conftest import open_box, still_works

MiB = 1 << 20
FILL = """
import os
f = open({path!r}, 'wb')
while True:
    f.write(b'x' * (1 << 20))
"""


def _used(box, path: str) -> int:
    ex = box.run(f"import os; s = os.statvfs({path!r}); (s.f_blocks - s.f_bfree) * s.f_frsize")
    assert ex.ok, ex
    return int(ex.result)


@pytest.mark.hostile
@pytest.mark.parametrize("path", ["/tmp/fill", "/work/fill", "/work/deep/er/fill"])
def test_filling_a_tmpfs_is_enospc_inside(bwrap_box, path):
    if "/deep/" in path:
        assert bwrap_box.run("import os; os.makedirs('/work/deep/er')").ok
    ex = bwrap_box.run(FILL.format(path=path))
    assert ex.error is not None and ex.error.name == "OSError" and "No space left on device" in ex.error.value, ex
    assert not ex.state_lost
    mount = "/" + path.split("/")[1]
    assert _used(bwrap_box, mount) <= 64 * MiB  # its size: a quarter of memory=256Mi
    assert bwrap_box.run(f"os.path.getsize({path!r}) <= 64 * 1024 * 1024").result == "True"
    still_works(bwrap_box)
    assert bwrap_box.run(f"os.remove({path!r})").ok
    assert bwrap_box.run("open('/work/small.txt', 'w').write('ok')").result == "2"  # room again


@pytest.mark.hostile
def test_fallocate_past_the_size_is_enospc(bwrap_box):
    ex = bwrap_box.run("import os\nfd = os.open('/tmp/big', os.O_WRONLY | os.O_CREAT)\nos.posix_fallocate(fd, 0, 200 << 20)  # under fsize, past /tmp's 64Mi")
    assert ex.error is not None and ex.error.name == "OSError" and "No space left" in ex.error.value, ex
    still_works(bwrap_box)


@pytest.mark.hostile
def test_touching_a_sparse_mapping_past_the_size_kills_only_the_worker(bwrap_box):
    bwrap_box.write_file("input.csv", "a\n1\n")
    bwrap_box.run("kept = 1")
    code = """
import mmap, os
fd = os.open('/tmp/sparse', os.O_RDWR | os.O_CREAT)
os.ftruncate(fd, 200 << 20)  # sparse, under fsize: fine until its pages are touched
m = mmap.mmap(fd, 200 << 20)
for off in range(0, 200 << 20, 4096):
    m[off] = 1  # past 64Mi the tmpfs has no page to give: SIGBUS
"""
    ex = bwrap_box.run(code)
    assert ex.error is not None and ex.error.name == "SandboxDied" and ex.state_lost, ex
    assert bwrap_box.run("kept").error.name == "NameError"  # a fresh worker
    assert bwrap_box.run("open('input.csv').read()").result == "'a\\n1\\n'"  # the inputs copied in again
    assert bwrap_box.run("import os; os.path.exists('/tmp/sparse')").result == "False"  # a fresh /tmp
    still_works(bwrap_box)


@pytest.mark.hostile
def test_ram_through_tmpfs_and_heap_stays_within_the_memory_budget(bwrap_box):
    """Fill /tmp and /work, then allocate until MemoryError: all of it fits in memory=256Mi."""
    for path in ("/tmp/fill", "/work/fill"):
        assert bwrap_box.run(FILL.format(path=path)).error.name == "OSError"
    on_disk = _used(bwrap_box, "/tmp") + _used(bwrap_box, "/work")
    ex = bwrap_box.run("blocks = []\ntry:\n    while True: blocks.append(bytearray(4 << 20))\n"
                       "except MemoryError:\n    n = len(blocks); blocks = None\nn * (4 << 20)")
    assert ex.ok, ex
    heap = int(ex.result)
    assert heap > 32 * MiB and on_disk > 100 * MiB
    assert on_disk + heap <= 256 * MiB, (on_disk, heap)
    still_works(bwrap_box)


def test_sizes_are_reported_and_configurable():
    box = open_box("bwrap", memory="1Gi", tmp_size="16Mi", work_size="300Mi")
    try:
        ex = box.run("import os; [os.statvfs(p).f_blocks * os.statvfs(p).f_frsize >> 20 for p in ('/tmp', '/work')]")
        assert ex.result == "[16, 300]"
        assert "heap:708Mi" in ex.isolation and "tmpfs:/tmp=16Mi,/work=300Mi" in ex.isolation
    finally:
        box.close()


def test_a_budget_too_small_for_its_tmpfs_is_a_clear_error():
    with pytest.raises(ValueError, match="carved out of the memory budget"):
        open_box("bwrap", memory="256Mi", work_size="240Mi")


def test_write_file_past_the_size_is_enospc_and_leaves_no_file(bwrap_box):
    with pytest.raises(OSError, match="more than the sandbox's /work holds") as info:
        bwrap_box.write_file("huge.bin", b"\0" * (65 * MiB))
    assert info.value.errno == errno.ENOSPC
    assert not (bwrap_box.workdir / "huge.bin").exists()
    # the sandbox's /work filled by the code: the host copy is dropped too
    assert bwrap_box.run(FILL.format(path="/work/fill")).error.name == "OSError"
    with pytest.raises(OSError) as info:
        bwrap_box.write_file("more.bin", b"\0" * MiB)
    assert info.value.errno == errno.ENOSPC and not (bwrap_box.workdir / "more.bin").exists()
    assert bwrap_box.run("import os; os.path.exists('more.bin')").result == "False"
    still_works(bwrap_box)


def test_files_in_and_out_go_through_the_worker(bwrap_box):
    bwrap_box.write_file("/work/data/in.csv", "a,b\n1,2\n")
    assert bwrap_box.run("open('data/out.txt', 'w').write(open('data/in.csv').read().upper())").ok
    assert bwrap_box.read_file("data/out.txt") == b"A,B\n1,2\n"
    assert not (bwrap_box.workdir / "data" / "out.txt").exists()  # the code's files live in the sandbox only
    with pytest.raises(FileNotFoundError, match="in the sandbox"):
        bwrap_box.read_file("missing.txt")
    big = os.urandom(5 * MiB)
    bwrap_box.write_file("big.bin", big)
    assert bwrap_box.read_file("big.bin") == big
    with pytest.raises(ValueError, match="outside"):
        bwrap_box.write_file("../escape.txt", "x")


def test_host_work_dir_is_private(box, tier):
    box.write_file("nested/dir/f.txt", "secret")
    assert stat.S_IMODE(os.stat(box.workdir).st_mode) == 0o700
    for d in (box.workdir / "nested", box.workdir / "nested" / "dir"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert stat.S_IMODE(os.stat(box.workdir / "nested" / "dir" / "f.txt").st_mode) == 0o600
    box.write_file("nested/dir/f.txt", "again")  # rewriting keeps it private
    assert stat.S_IMODE(os.stat(box.workdir / "nested" / "dir" / "f.txt").st_mode) == 0o600
    assert box.read_file("nested/dir/f.txt") == b"again"
