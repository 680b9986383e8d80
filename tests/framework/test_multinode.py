"""Two torchrun "nodes" on loopback, each a separate process running the installed ``fp run``
(static rendezvous, one gloo rank per node on CPU), as a Slurm job starts them on two machines:
both exit cleanly, their ranks sit on different nodes and end with the same weights, and only
rank 0 writes the run directory."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fp
from fp.engine.distributed import weights_digest

REPO = Path(__file__).parents[2]
BIN = Path(sys.executable).parent  # the console scripts of the environment running the tests
TORCHRUN, FP = BIN / "torchrun", BIN / "fp"
BINDS = ["train.epochs = 4", "prune.rounds = 2", "prune.target = 0.5", "prune.samples = 64",
         "digits.size = 8", "flow.enabled = False"]
TIMEOUT_S = 300  # a hung rendezvous or collective fails the test instead of blocking the run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (TORCHRUN.exists() and FP.exists()),
                                 reason=f"no torchrun and fp console scripts in {BIN}")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_command(node_rank: int, port: int, out: Path) -> list[str]:
    binds = [arg for bind in BINDS for arg in ("--bind", bind)]
    return [str(TORCHRUN), "--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(port),
            str(FP), "run", str(REPO / "gin" / "quickstart.gin"), *binds,
            "--out", str(out), "--device", "cpu"]


def run_nodes(folder: Path, out: Path) -> tuple[list[int | None], list[str]]:
    """Start both nodes, each in a folder of its own under ``folder``; wait for both, or stop
    them at the deadline or as soon as one fails. Returns their exit codes (None: stopped) and
    their output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FP_DISABLE_PLUGIN_AUTOLOAD": "1"}
    port, procs, logs = free_port(), [], []
    for node in (0, 1):
        cwd = folder / f"node{node}"
        cwd.mkdir(parents=True)
        logs.append(folder / f"node{node}.log")
        with logs[-1].open("w") as log:
            procs.append(subprocess.Popen(node_command(node, port, out), cwd=cwd, env=env,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and any(p.poll() is None for p in procs) \
            and not any(p.poll() for p in procs):
        time.sleep(0.2)
    for proc in procs:  # torchrun passes SIGTERM on to its workers and waits for them
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    codes = [p.returncode if p.returncode is not None and p.returncode >= 0 else None for p in procs]
    return codes, [log.read_text() for log in logs]


def assert_both_succeeded(codes: list[int | None], logs: list[str]) -> None:
    assert codes == [0, 0], "\n".join(f"--- node {n} (exit {c}):\n{log[-4000:]}"
                                      for n, (c, log) in enumerate(zip(codes, logs)))


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_two_torchrun_nodes_train_one_run(tmp_path):
    out = tmp_path / "run"
    codes, logs = run_nodes(tmp_path / "first", out)
    assert_both_succeeded(codes, logs)

    ranks = json.loads((out / "ranks.json").read_text())["ranks"]
    assert [(r["rank"], r["node"]) for r in ranks] == [(0, 0), (1, 1)]  # one rank on each node
    assert ranks[0]["digest"] == ranks[1]["digest"] != ""  # the same weights, bit for bit
    assert weights_digest(fp.load(out / "model.pt")) == ranks[0]["digest"]  # what rank 0 saved

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["filters_kept"] == pytest.approx(summary["dense_filters"] / 2, abs=4)
    # rank 1 shares rank 0's --out (a shared filesystem) and writes nothing of its own
    assert list((tmp_path / "first" / "node1").iterdir()) == []
    assert list((tmp_path / "first" / "node0").iterdir()) == []
    assert "world_size 2" in logs[0] and "world_size 2" not in logs[1]  # rank 0 reports the run

    # the same job again (a requeued Slurm job): both nodes find the run finished, touch nothing
    finished = files_of(out)
    codes, logs = run_nodes(tmp_path / "again", out)
    assert_both_succeeded(codes, logs)
    assert files_of(out) == finished
