"""How many CPUs the backends size their thread pools by: the affinity, capped by a container's CPU quota."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from fastsentiment.backends.base import cgroup_cpu_quota, inference_threads, usable_cpus


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_takes_the_tightest_quota_of_the_cgroup_and_its_ancestors(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "kubepods" / "cpu.max", "max 100000\n")
    write(root / "kubepods" / "pod1" / "cpu.max", "250000 100000\n")
    write(root / "kubepods" / "pod1" / "app" / "cpu.max", "400000 100000\n")
    write(tmp_path / "membership", "0::/kubepods/pod1/app\n")
    assert cgroup_cpu_quota(root, tmp_path / "membership") == 2.5


def test_no_quota_anywhere_is_none(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "app" / "cpu.max", "max 100000\n")
    write(tmp_path / "membership", "0::/app\n")
    assert cgroup_cpu_quota(root, tmp_path / "membership") is None
    assert cgroup_cpu_quota(root, tmp_path / "no-such-file") is None  # not Linux, or no /proc
    write(root / "app" / "cpu.max", "garbage\n")
    write(tmp_path / "membership", "\n0::/app\n")
    assert cgroup_cpu_quota(root, tmp_path / "membership") is None  # unreadable files are no quota, not a crash


def test_cgroup_v1_reads_the_cfs_quota_of_the_cpu_controller(tmp_path):
    root = tmp_path / "cgroup"
    group = root / "cpu,cpuacct" / "docker" / "abc"
    write(group / "cpu.cfs_quota_us", "150000\n")
    write(group / "cpu.cfs_period_us", "100000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")  # the root: no quota
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    write(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", "1073741824\n")
    membership = tmp_path / "membership"
    write(membership, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_quota(root, membership) == 1.5
    write(group / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(root, membership) is None


def test_a_container_sees_its_own_cgroup_at_the_mount_under_its_host_path(tmp_path):
    """Docker without a cgroup namespace: /proc/self/cgroup names /docker/<id>, the mount is that cgroup itself."""
    root = tmp_path / "cgroup"
    write(root / "cpu.max", "200000 100000\n")
    write(tmp_path / "membership", "0::/docker/0123abcd\n")
    assert cgroup_cpu_quota(root, tmp_path / "membership") == 2.0


def _own_v1_cpu_cgroup() -> Path | None:
    """This process's cgroup directory of the v1 CPU controller, where the kernel mounts one."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    mount = next((Path(m[1]) for m in mounts if m[2] == "cgroup" and "cpu" in m[3].split(",")), None)
    if mount is None:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return mount / path.lstrip("/")
    return None


def test_a_real_cpu_quota_caps_the_threads_of_a_process_that_may_run_on_more_cpus():
    """The kernel's own cgroup (v1 CPU controller; creating one needs root): a process given one CPU's time sizes
    its thread pools at 1, though its affinity lets it run on every CPU."""
    own = _own_v1_cpu_cgroup()
    if own is None or os.geteuid() != 0 or (os.cpu_count() or 1) < 2:
        pytest.skip("needs root, a cgroup v1 CPU controller and at least 2 CPUs")
    group = own / f"fastsentiment-test-{os.getpid()}"
    try:
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("100000")
    except OSError as error:
        pytest.skip(f"cannot make a cgroup here: {error}")
    # The test workers are pinned to a share of the CPUs: the child widens its affinity to every CPU first.
    probe = (
        "import os; os.sched_setaffinity(0, range(os.cpu_count())); "
        "from fastsentiment.backends.base import inference_threads, usable_cpus; "
        "print(len(os.sched_getaffinity(0)), usable_cpus(), inference_threads())"
    )
    environment = {key: value for key, value in os.environ.items() if key != "FASTSENTIMENT_THREADS"}
    try:
        shown = subprocess.run(
            ["sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec "$0" -c "$1"', sys.executable, probe],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    finally:
        group.rmdir()  # the child has exited: the cgroup is empty again
    affinity, usable, threads = map(int, shown)
    assert affinity >= 2 and (usable, threads) == (1, 1)


def test_more_threads_than_usable_cpus_are_capped_with_one_warning(caplog):
    cpus = usable_cpus()
    with caplog.at_level("WARNING", logger="fastsentiment"):
        assert inference_threads(cpus + 997) == cpus
        assert inference_threads(cpus + 997) == cpus
        assert inference_threads(cpus) == cpus
    assert [record.getMessage() for record in caplog.records] == [
        f"{cpus + 997} threads asked for, but this process may use {cpus} CPUs: computing with {cpus}"
    ]
