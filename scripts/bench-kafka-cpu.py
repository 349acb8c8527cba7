#!/usr/bin/env python3
"""CPU per event, by process, in the steady phase of `tally bench inventory --stack kafka`.

The machine's speed moves between runs; what each process spends per event moves much less,
so before/after comparisons of an optimisation use this. Starts fresh servers for every run
(scripts/services.sh), runs the release build (`cargo build --release` first; or $BIN), samples /proc for WINDOW seconds
(default 8) one second after the opening stock is applied, and prints cores used and CPU
microseconds per steady event for tally, PostgreSQL (all backends), nisshi and Redis.

    scripts/bench-kafka-cpu.py [--runs N] [bench arguments, e.g. --events 600000]

Linux only (reads /proc); the servers must run on this machine.
"""
import argparse, glob, json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HZ = os.sysconf('SC_CLK_TCK')


def cpu_by_group(bench_pid):
    groups = {}
    for d in glob.glob('/proc/[0-9]*'):
        try:
            comm = open(d + '/comm').read().strip()
            fields = open(d + '/stat').read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / HZ  # utime + stime
        if int(d[6:]) == bench_pid:
            name = 'tally'
        elif comm in ('postgres', 'nisshi') or comm.startswith('redis'):
            name = comm.split('-')[0]
        else:
            continue
        groups[name] = groups.get(name, 0.0) + seconds
    return groups


def one_run(bench_args, window):
    started = subprocess.run([f'{ROOT}/scripts/services.sh', 'start', 'postgres', 'redis', 'kafka'],
                             capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for line in started.splitlines():
        if line.startswith('export '):
            key, value = line[len('export '):].split('=', 1)
            env[key] = value
    try:
        binary = os.environ.get('BIN', f'{ROOT}/target/release/tally')
        cmd = [binary, 'bench', 'inventory', '--stack', 'kafka', '--json', *bench_args]
        bench = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in bench.stderr:
            if line.startswith('engine: opening stock'):
                break
        time.sleep(1.0)
        before, t0 = cpu_by_group(bench.pid), time.time()
        time.sleep(window)
        after, elapsed = cpu_by_group(bench.pid), time.time() - t0
        out, _ = bench.communicate()
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        subprocess.run([f'{ROOT}/scripts/services.sh', 'stop', env.get('TEST_TALLY_SERVICES_DIR', '')],
                       capture_output=True)
    rate = result['events_per_s']
    print(f"events/s {rate:.0f}  ceiling {result['ceiling_events_per_s']:.0f}  "
          f"desync p99 {result['desync_p99_ms']:.1f} ms")
    for name in sorted(after):
        cores = (after[name] - before.get(name, 0.0)) / elapsed
        print(f"  {name:9s} {cores:5.2f} cores  {cores * 1e6 / rate:6.1f} µs/event")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=1)
    parser.add_argument('--window', type=float, default=float(os.environ.get('WINDOW', '8')))
    args, bench_args = parser.parse_known_args()
    if not any(a.startswith('--events') for a in bench_args):
        # Long enough that the sampling window falls inside the steady phase.
        bench_args += ['--events', '600000']
    bench_args += ['--skus', '100000', '--latency-seconds', '2']
    for _ in range(args.runs):
        one_run(bench_args, args.window)


if __name__ == '__main__':
    main()
