"""The CPU clock against what the processes themselves say they spent."""
import subprocess
import sys
import time

from patchray.bench.cpu import CpuClock

# A child that burns about `seconds` of CPU, then prints the CPU time it spent by its own count.
BURN = """
import sys, time
end = time.process_time() + float(sys.argv[1])
while time.process_time() < end:
    pass
print(time.process_time())
"""


def test_the_clock_counts_a_child_process_that_starts_and_ends_inside_the_window():
    with CpuClock(every_s=0.05) as clock:
        started = time.time()
        child = subprocess.run([sys.executable, "-c", BURN, "0.6"], capture_output=True, text=True, check=True)
        time.sleep(0.15)  # samples after the child ended (its last <= 50 ms before it ended may be lost)
        ended = time.time()
        own = float(child.stdout)
    measured = clock.seconds_between(started, ended)
    # the child's own count (its interpreter's start included), less at most one sampling interval lost at its end
    assert own - 0.1 <= measured <= own + 0.25


def test_a_window_in_which_nothing_runs_costs_nearly_nothing_and_times_interpolate():
    with CpuClock(every_s=0.05) as clock:
        time.sleep(0.3)
    first, last = clock.samples[0][0], clock.samples[-1][0]
    assert clock.seconds_between(first, last) < 0.1
    assert clock.seconds_at(first - 10) == clock.samples[0][1] and clock.seconds_at(last + 10) == clock.samples[-1][1]
    assert all(b[1] >= a[1] for a, b in zip(clock.samples, clock.samples[1:]))  # a running total never falls


def test_a_long_lived_child_is_counted_only_for_what_it_spends_inside_the_window():
    # burns 0.4 s of CPU, then waits on its stdin without spending any
    script = BURN.replace("float(sys.argv[1])", "0.4") + "sys.stdout.flush()\nsys.stdin.read()\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()  # it has burnt its 0.4 s before the clock starts
        with CpuClock(every_s=0.05) as clock:
            time.sleep(0.3)
        assert clock.seconds_between(clock.samples[0][0], clock.samples[-1][0]) < 0.1
    finally:
        child.communicate("")
    assert child.returncode == 0


def test_cpu_goes_to_the_role_of_the_process_that_spent_it():
    from patchray.bench.cpu import role_of

    assert role_of("ray::MapBatches(read_and_decode)", False) == "data tasks"
    assert role_of("ray::RayTrainWorker.run_train_fn", False) == "training worker"
    assert role_of("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --x", False) == "raylet"
    assert role_of("python -c from multiprocessing.spawn import spawn_main", False).startswith("other processes")
    assert role_of("anything", True) == "driver"
    with CpuClock(every_s=0.05) as clock:
        started = time.time()
        subprocess.run([sys.executable, "-c", BURN, "0.3"], capture_output=True, check=True)
        time.sleep(0.1)
        ended = time.time()
    roles = clock.roles_between(started, ended)
    assert roles.get("other processes (DataLoader workers)", 0) >= 0.2
