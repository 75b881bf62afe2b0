"""The run directory's Ray temp dir keeps Ray's longest Unix socket path under the 107-byte limit."""
from pathlib import Path

import pytest

from flows.env import RunPaths

# Ray's longest socket: <temp>/session_2026-11-25_15-03-28_810962_20652/sockets/dash_MetricsHead
LONGEST_SUFFIX = len("/session_2026-11-25_15-03-28_810962_20652/sockets/dash_MetricsHead")


@pytest.mark.parametrize("home", ["/w/.ganflow", "/tmp/ganflow-bench-45p46cev/ws/.ganflow",
                                  "/home/someone/projects/a-rather-long-workspace-name/.ganflow"])
def test_ray_sockets_fit(home):
    paths = RunPaths(Path("/w"), Path(home))
    assert len(str(paths.ray_temp)) + LONGEST_SUFFIX + 2 <= 107  # +2: a longer pid or date digits
