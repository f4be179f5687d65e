"""SIGKILL tiny runs of SimCLR, MoCo v2, DINO and the MLM recipe at random moments (5 kills each, some while a
checkpoint is being written), restart them as the README says, and check each ends bitwise equal to an uninterrupted
run: weights, optimizer, scheduler, RNG states, the collator's generator and the loss history (tests/fault_injection.py;
`python tests/fault_injection.py --kills 20` runs the by-hand version)."""

import importlib.util
import os

import pytest

spec = importlib.util.spec_from_file_location("fault_injection", os.path.join(os.path.dirname(__file__), "fault_injection.py"))
fault_injection = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fault_injection)


@pytest.mark.slow
@pytest.mark.parametrize("method", fault_injection.METHODS)
def test_killed_runs_resume_unaided_and_end_bitwise_equal(method, tmp_path):
    result = fault_injection.check_method(method, kills=5, seed=0, workdir=str(tmp_path))
    assert result["kills"] >= 5, result
    assert any(kill["mode"] == "writing" for kill in result["log"]), result
    assert result["differing"] == [], f"differ from the uninterrupted run after kills {result['log']}"
    assert result["incomplete_visible"] == [], result
