"""Assertions shared by the unit and end-to-end tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from publisher.plan import Image, Plan

ERROR_PREFIX = "publisher: error: "


def assert_one_error_line(
    returncode: int, stderr: str, *fragments: str, exit_code: int, progress: bool = False
) -> str:
    """Assert a failure told in one line, containing every fragment; return that line.

    The exit status is ``exit_code``, nothing shows a traceback, and stderr is the one line
    ``publisher: error: ...``.  With ``progress``, the progress lines that commands which
    build report on stderr may come before it; there is still exactly one error line.
    """
    assert "Traceback" not in stderr
    assert returncode == exit_code, f"exit status {returncode}, not {exit_code}:\n{stderr}"
    lines = stderr.splitlines()
    if progress:
        lines = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(ERROR_PREFIX), stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def layer_steps(config: Mapping[str, Any]) -> list[str]:
    """The step (history's ``created_by``, e.g. ``ADD deps.tar / # buildkit``) that made each
    of an image config's layers, from the base up, in the order of its diff IDs. Steps
    that made no layer (ENV, LABEL, ENTRYPOINT) are left out."""
    steps = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    assert len(steps) == len(diff_ids), f"{len(steps)} layer steps for {len(diff_ids)} layers"
    return steps


def owner(the_plan: Plan, tag: str) -> Image:
    """The one image of ``the_plan`` that ``tag`` names."""
    (image,) = [i for i in the_plan.images if tag in {t.name for t in i.tags}]
    return image
