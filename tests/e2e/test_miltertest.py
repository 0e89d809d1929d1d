"""milterd driven by ``miltertest`` (OpenDKIM): a second, Sendmail-flavoured milter client.

The checks live in ``milterd.lua`` next to this file; each mode is one miltertest run
against milterd started with the matching configuration.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2e_support import WAIT

if TYPE_CHECKING:
    from e2e_support import Milterd

pytestmark = pytest.mark.e2e

MILTERTEST = shutil.which("miltertest")
SCRIPT = Path(__file__).with_name("milterd.lua")
CONFIGS = {
    "ladder": '[options]\ngtube_patterns = "all"\n[milter]\nreject_action = "reject"\n',
    "quarantine": '[options]\ngtube_patterns = "all"\n[milter]\nreject_action = "quarantine"\n',
}


@pytest.mark.skipif(
    MILTERTEST is None,
    reason="miltertest is not installed (`make test-deps` installs it on Debian)",
)
@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_miltertest(milterd: Milterd, mode: str) -> None:
    assert MILTERTEST is not None
    milterd.use(CONFIGS[mode])

    run = subprocess.run(
        [
            MILTERTEST,
            "-D",
            f"MILTER=inet:{milterd.port}@127.0.0.1",
            "-D",
            f"MODE={mode}",
            "-s",
            str(SCRIPT),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
    )

    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    summary = re.search(r"^(\d+) passed, (\d+) failed$", out, re.MULTILINE)
    assert summary is not None, out
    assert int(summary.group(1)) > 0, out
    assert summary.group(2) == "0", out
