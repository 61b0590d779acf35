"""Robust evaluation sharded over processes with torchrun (gloo on the CPU, as CI has no GPU).

Each test launches real torchrun jobs on this machine: two local ranks, a rank killed mid-run and
resumed by one process, and two "nodes" joined through a local rendezvous.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import robustlens as rl
from robustlens.evaluation.distributed import shard

pytestmark = pytest.mark.slow

EVAL = ["evaluate", "--model", "digits-cnn", "--data", "digits", "--attack", "pgd", "--attack",
        "fgsm", "--eps", "0.1", "--steps", "10", "--quiet"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "samples.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, the same command."""
    out = tmp_path_factory.mktemp("single")
    subprocess.run([sys.executable, "-m", "robustlens", *EVAL, "--limit", "120",
                    "--batch-size", "16", "--out", str(out)], check=True, env=_env())
    return out


def test_shards_are_stratified_disjoint_and_cover_everything() -> None:
    y = torch.randint(0, 7, (500,), generator=torch.Generator().manual_seed(0))
    pending = torch.arange(500)[torch.rand(500, generator=torch.Generator().manual_seed(1)) > 0.3]
    for world in (1, 2, 3, 8):
        parts = [shard(y, pending, r, world) for r in range(world)]
        joined = torch.cat(parts).sort().values
        assert torch.equal(joined, pending)  # disjoint and complete
        for k in range(7):
            counts = [int((y[p] == k).sum()) for p in parts]
            assert max(counts) - min(counts) <= 1  # each class split evenly


def test_two_ranks_give_the_single_process_results(single: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    proc = subprocess.run(
        _torchrun("--nproc-per-node", "2", "-m", "robustlens", *EVAL, "--limit", "120",
                  "--batch-size", "16", "--out", str(out)),
        env=_env(), capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _rows(out) == _rows(single)  # every image, every attack, every distance
    # Rank 0 alone writes: one results file, the merged rows, no part files left behind.
    assert not list(out.glob("*part-*"))
    assert proc.stdout.count("wrote ") == 1
    import json

    one = json.loads((single / "results.json").read_text())["robustness"]
    two = json.loads((out / "results.json").read_text())
    assert two["robustness"] == one and two["meta"]["processes"] == 2


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rank_pid(root: int, rank: int) -> int | None:
    for pid in _descendants(root):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env):
            return pid
    return None


def test_a_killed_rank_loses_nothing_and_one_process_finishes_the_job(
    single: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    job = subprocess.Popen(
        _torchrun("--nproc-per-node", "2", "-m", "robustlens", *EVAL, "--limit", "120",
                  "--batch-size", "16", "--out", str(out)),
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    part = out / "samples.part-1-of-2.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if part.is_file() and part.read_text().count("\n") >= 2:  # header and a batch
            break
        time.sleep(0.02)
    victim = _rank_pid(job.pid, 1)
    assert victim is not None and job.poll() is None, "the job ended before it could be killed"
    os.kill(victim, signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0 and "rank      : 1" in err  # torchrun names the failed rank
    kept = sum(len(list(csv.DictReader(p.open()))) for p in out.glob("samples.part-*.csv"))
    assert 0 < kept < 120  # the finished batches of both ranks are on disk
    resumed = subprocess.run(
        [sys.executable, "-m", "robustlens", *EVAL, "--limit", "120", "--batch-size", "16",
         "--out", str(out)],
        env={**_env(), "ROBUSTLENS_PROGRESS": "0"}, capture_output=True, text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _rows(out) == _rows(single)
    assert not list(out.glob("*part-*"))
    import json

    warnings = json.loads((out / "results.json").read_text())["robustness"]["warnings"]
    assert any("resumed an unfinished sharded run" in w for w in warnings)


SCRIPT = """
import json, sys
import robustlens as rl

ds = rl.data.load("digits")[:96]
model = rl.zoo.load("digits-cnn")
ev = rl.evaluation.evaluate(model, ds, [rl.attacks.PGD(eps=0.1, steps=5)], batch_size=16,
                            out=sys.argv[1], distributed=True)
print(json.dumps({"robust": ev.robust_accuracy, "n": ev.n}))
"""


def test_two_nodes_through_a_rendezvous_and_the_python_api(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT))
    port = _port()
    nodes = [
        subprocess.Popen(
            _torchrun("--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                      "--master-addr", "127.0.0.1", "--master-port", str(port), str(script),
                      str(tmp_path / "out")),
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs[0][1][-2000:]
    ds = rl.data.load("digits")[:96]
    alone = rl.evaluation.evaluate(rl.zoo.load("digits-cnn"), ds,
                                   [rl.attacks.PGD(eps=0.1, steps=5)], batch_size=16)
    import json

    for stdout, _ in outputs:  # every rank gets the whole result
        got = json.loads(stdout.strip().splitlines()[-1])
        assert got == {"robust": alone.robust_accuracy, "n": 96}


AUDIT_TOML = """
[data]
limit = 100
attack_limit = 60
[whitebox]
attacks = ["fgsm", "pgd"]
steps = 10
min_norm = ["deepfool"]
min_norm_limit = 20
eps_curve = [0.05, 0.1]
gallery = 2
[blackbox]
enabled = false
[defenses]
names = []
[explanations]
enabled = false
[bias]
enabled = false
"""


def _sections(folder: Path) -> dict[str, object]:
    import json

    def drop_seconds(d: object) -> object:
        if isinstance(d, dict):
            return {k: drop_seconds(v) for k, v in d.items() if k != "seconds"}
        return d

    return drop_seconds(json.loads((folder / "results.json").read_text())["sections"])  # type: ignore[return-value]


def test_audit_under_torchrun_shards_the_attacks_and_writes_what_one_process_writes(
    tmp_path: Path,
) -> None:
    config = tmp_path / "suite.toml"
    config.write_text(AUDIT_TOML)
    common = ["audit", "--model", "digits-cnn", "--data", "digits", "--config", str(config),
              "--eps", "0.1", "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "robustlens", *common, "--out", str(one)],
                   check=True, env=_env(), capture_output=True)
    proc = subprocess.run(
        _torchrun("--nproc-per-node", "2", "-m", "robustlens", *common, "--out", str(two)),
        env=_env(), capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone writes the results and the report
    assert (two / "index.html").is_file()
    assert _sections(two) == _sections(one)  # every section, per image and in the summaries
    work = next((two / ".robustlens" / "work").glob("whitebox-*"))
    assert not list(work.glob("*part-*")) and len(_rows(work)) == 60  # merged by rank 0
    import json

    assert json.loads((two / "results.json").read_text())["meta"]["processes"] == 2
