"""SLURM faults through the workflow's slurm profile on the single-node test cluster (tests/slurm/cluster.sh):
a job that fails once is submitted again and succeeds, one that always fails stops the run naming its rule
and logs. The cropflow demo through SLURM is tests/test_workflow.py::test_demo_through_slurm_equals_local_run."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import yaml

from slurm_cluster import (REPO, WORKFLOW_PROFILE, local_rules, require_slurm, run_slurm, slurm_jobs, submissions,
                           without_shown_logs)

FAULTS = REPO / "tests" / "data" / "slurm_faults" / "Snakefile"


def test_failed_job_is_retried_and_a_lasting_failure_names_rule_and_logs(tmp_path):
    require_slurm()
    retries = yaml.safe_load((WORKFLOW_PROFILE / "profile.yaml").read_text())["retries"]
    assert retries == 1
    proc = run_slurm(FAULTS, tmp_path, "--keep-going")
    out = proc.stdout
    assert proc.returncode != 0, out[-3000:]

    ids = defaultdict(list)
    for sub in submissions(out):
        ids[sub.rule].append(sub.slurm_id)
    print("SLURM jobs:", dict(ids))
    # every attempt is its own sbatch job: the first and the retry
    assert len(ids["flaky"]) == len(ids["broken"]) == 1 + retries, out[-3000:]
    assert not local_rules(out) & {"flaky", "broken"}
    states = slurm_jobs([*ids["flaky"], *ids["broken"]])
    assert [states[i] for i in ids["flaky"]] == [("FAILED", "rule_flaky"), ("COMPLETED", "rule_flaky")]
    assert [states[i][0] for i in ids["broken"]] == ["FAILED"] * (1 + retries)

    # the retry ran as attempt 2 in its own SLURM job and made the output
    assert (tmp_path / "flaky.txt").read_text() == "done\n"
    assert "attempt 2 on" in (tmp_path / "logs" / "flaky.log").read_text()
    assert f"SLURM job {ids['flaky'][1]}" in (tmp_path / "logs" / "flaky.log").read_text()
    assert "Trying to restart job" in out
    assert not (tmp_path / "broken.txt").exists()

    # the report of the lasting failure: the rule, its log and the SLURM log of the last attempt, and the log shown
    last = ids["broken"][-1]
    slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_broken" / f"{last}.log"
    own = without_shown_logs(out)
    report = own[own.rindex("Error in rule broken:"):]
    assert re.search(rf"log: logs/broken\.log, {re.escape(str(slurm_log))} \(check log file", report), report[:1500]
    assert f"SLURM-job '{last}' failed" in report
    assert re.search(rf"^Logfile logs/broken\.log:\n=+\ncannot read the input \(SLURM job {last}\)$", out, re.M)
    assert slurm_log.is_file() and "Error in rule broken" in slurm_log.read_text()
    assert "1 of 3 steps (33%) done" in out
