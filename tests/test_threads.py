"""A job's thread pools: environment for libraries loaded later, threadpoolctl for those already loaded."""

import json
import os
import subprocess
import sys
from pathlib import Path

from cropflow.threads import THREAD_VARS, thread_env

WORKFLOW = Path(__file__).parents[1] / "workflow"


def run_python(code: str) -> dict:
    """The JSON a fresh interpreter prints, with no thread variable set beforehand."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = str(WORKFLOW)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_thread_env_names_every_pool():
    assert thread_env(3) == {var: "3" for var in THREAD_VARS}
    assert {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"} <= set(thread_env(1))
    assert thread_env(0) == {} and thread_env(-1) == {}


def test_limits_apply_to_libraries_loaded_before_and_after():
    out = run_python(
        "import json, os\n"
        "import numpy\n"  # loaded before: its BLAS pool is capped through threadpoolctl
        "from threadpoolctl import threadpool_info\n"
        "before = [p['num_threads'] for p in threadpool_info()]\n"
        "from cropflow.threads import limit_threads\n"
        "limit_threads(1)\n"
        "import sklearn.ensemble\n"  # loaded after: its OpenMP reads the environment
        "print(json.dumps({'before': before, 'after': [p['num_threads'] for p in threadpool_info()],"
        " 'omp': os.environ.get('OMP_NUM_THREADS'), 'tf': 'tensorflow' in __import__('sys').modules}))"
    )
    assert out["before"] and out["after"] and set(out["after"]) == {1}
    assert out["omp"] == "1" and not out["tf"]


def test_no_limit_leaves_the_environment_alone():
    out = run_python("import json, os\nfrom cropflow.threads import limit_threads\nlimit_threads(0)\n"
                     "print(json.dumps(sorted(k for k in os.environ if k.endswith('_THREADS'))))")
    assert out == []
