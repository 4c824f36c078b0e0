"""The tests of `conftest.SIDE_FILES`, run by a second pytest process beside this one (see
conftest: the second core of a 2-core machine would otherwise idle)."""
import time

import pytest

from .conftest import early_result, side_nodeids, side_report, side_spec, starts_early


@starts_early(side_spec)
def test_side_files_pass():
    """Every selected test of the side files passes in the second process (its summary line
    is printed; on a failure, the tail of its report)."""
    t0 = time.monotonic()
    r = early_result(test_side_files_pass)
    if not side_nodeids:
        pytest.skip("no test of the side files selected")
    tail = (r.stdout + r.stderr)[-8000:]
    lines = tail.strip().splitlines()
    side_report.append(f"{lines[-1] if lines else 'no output'} (waited "
                       f"{time.monotonic() - t0:.0f} s)")
    assert r.returncode == 0, f"tests in the second process failed:\n{tail}"
