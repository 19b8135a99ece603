"""Short seeded runs of the fault-injection harness (bench/chaos.py --quick).

The takeover, sleeper and sync-folder scenarios have short versions in
tests/queue (test_workers.py, test_sync_folder.py); these run the others.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_chaos_bad_input_and_security_scenarios_meet_every_target(tmp_path) -> None:
    res = subprocess.run([sys.executable, str(REPO / "bench" / "chaos.py"), "--scenario", "chaos,bad-input,security",
                          "--seed", "7", "--quick", "--keep", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "0 target(s) missed" in res.stdout
    for figure in ("chaos: items done / items in grid", "bad input: tracebacks shown to the user",
                   "security: code executed from a malicious checkpoint"):
        assert figure in res.stdout
