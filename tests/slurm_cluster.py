"""Running the workflow through the SLURM executor on the single-node cluster of tests/slurm/cluster.sh.

`require_slurm()` skips a test only where SLURM is not installed (a laptop); with CROPFLOW_REQUIRE_SLURM=1
(set by .ci/run) a missing or stopped cluster fails the test instead."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PROFILE = REPO / "profiles" / "slurm"
SITE_PROFILE = REPO / "tests" / "slurm" / "site"
CLUSTER_SCRIPT = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_COMMANDS = ("sbatch", "squeue", "sinfo", "scontrol")

# "Job 3 has been submitted with SLURM jobid 17 (log: /w/.snakemake/slurm_logs/rule_stack/E.../17.log)."
_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", re.M)
_LOCAL = re.compile(r"^localrule (\w+):$", re.M)
# a log shown by --show-failed-logs: "Logfile <path>:", a rule of "=", the log, the same rule
_SHOWN_LOG = re.compile(r"^Logfile [^\n]+:\n(=+)\n.*?^\1$\n?", re.M | re.S)


@dataclass(frozen=True)
class Submission:
    slurm_id: str
    rule: str
    log: Path


def require_slurm() -> None:
    """Skip when the SLURM client commands are absent (unless CROPFLOW_REQUIRE_SLURM=1); fail when they are
    there but no cluster answers."""
    required = os.environ.get("CROPFLOW_REQUIRE_SLURM") == "1"
    missing = [cmd for cmd in SLURM_COMMANDS if shutil.which(cmd) is None]
    if missing:
        message = (f"SLURM is not installed ({', '.join(missing)} not on PATH); as root on Debian run "
                   f"{CLUSTER_SCRIPT.relative_to(REPO)} install && {CLUSTER_SCRIPT.relative_to(REPO)} up")
        if required:
            pytest.fail(message + " (CROPFLOW_REQUIRE_SLURM=1)")
        pytest.skip(message)
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not re.search(r"^(idle|mix|alloc)", proc.stdout, re.M):
        pytest.fail(f"SLURM is installed but no node is up (sinfo: {proc.stdout.strip() or proc.stderr.strip()}); "
                    f"start the test cluster with {CLUSTER_SCRIPT.relative_to(REPO)} up")


def run_slurm(snakefile: Path, workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """snakemake with the workflow's slurm profile and the test cluster's site profile (output merged)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir),
         "--workflow-profile", str(WORKFLOW_PROFILE), "--profile", str(SITE_PROFILE), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=timeout, cwd=workdir,
    )


def submissions(output: str) -> list[Submission]:
    """The SLURM jobs a run submitted, by the executor's log lines (the rule from the SLURM log folder)."""
    found = []
    for _, slurm_id, log in _SUBMITTED.findall(output):
        rule = re.search(r"/rule_(\w+?)/", log)
        assert rule, log
        found.append(Submission(slurm_id, rule.group(1), Path(log)))
    return found


def without_shown_logs(output: str) -> str:
    """The run's own messages, without the job logs --show-failed-logs printed."""
    return _SHOWN_LOG.sub("", output)


def local_rules(output: str) -> set[str]:
    """Rules whose jobs the run executed on the submit host (not counting the job logs it printed)."""
    return set(_LOCAL.findall(without_shown_logs(output)))


def slurm_jobs(ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, comment)} as SLURM itself reports them (finished jobs stay listed, MinJobAge)."""
    proc = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%k"],
                          capture_output=True, text=True, check=True, timeout=30)
    jobs = {}
    for line in proc.stdout.splitlines():
        job_id, state, comment = line.strip().split("|", 2)
        jobs[job_id] = (state, comment)
    return jobs


def slurm_job_details(job_id: str) -> dict[str, str]:
    """`scontrol show job` of a (finished) job as {field: value}, e.g. TresPerJob=gres:gpu:1."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True,
                          timeout=30)
    return dict(item.split("=", 1) for item in proc.stdout.split() if "=" in item)
