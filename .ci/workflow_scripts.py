"""Write each `run:` script of GitHub workflows to a file of its own, for shellcheck.

    python .ci/workflow_scripts.py OUT_DIR WORKFLOW.yml...

actionlint does this too, but its PyPI wrapper downloads its binary from GitHub when it
is installed, which this project's CI cannot reach. Scripts run under bash (GitHub's
default shell on Linux runners); one holding a `${{ }}` expression is refused here, since
the workflows pass every value through `env:` (an expression in a script is a template
injection risk, and shellcheck cannot read it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

INJECTION = "an expression (${{ }}) in a run script; pass the value through env:"


def main(out: Path, workflows: list[Path]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.sh"):
        old.unlink()
    errors = 0
    for workflow in workflows:
        jobs = (yaml.safe_load(workflow.read_text(encoding="utf-8")) or {}).get("jobs") or {}
        for job_id, job in jobs.items():
            for n, step in enumerate(job.get("steps") or [], start=1):
                script = step.get("run")
                if script is None:
                    continue
                where = f"{workflow.stem}-{job_id}-step{n}"
                if "${{" in script:
                    print(f"{workflow}: {job_id}, step {n}: {INJECTION}", file=sys.stderr)
                    errors += 1
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", where)
                (out / f"{name}.sh").write_text(f"#!/usr/bin/env bash\n{script}", encoding="utf-8")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
