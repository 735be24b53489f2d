"""The smoke test's report parsing and checks, with `docker_client.run` faked: no Docker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from publisher import smoke
from publisher.errors import BuildError

PREFECT_3_OUTPUT = """\
Version:             3.9.1
API version:         0.8.4
Python version:      3.13.5
Server type:         ephemeral
"""


def report_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "pid1": {"cmdline": ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"], "comm": "tini"},
        "python": "3.13.5",
        "machine": "x86_64",
        "prefect": {"code": 0, "output": PREFECT_3_OUTPUT},
        "extras": {
            "docker": {"packages": ["docker"], "installed": ["docker"]},
            "aws": {"packages": ["boto3", "s3fs"], "installed": []},
        },
    }
    document.update(changes)
    return document


def container_output(document: dict[str, Any], *, noise: str = "") -> str:
    return noise + smoke.REPORT_MARKER + json.dumps(document) + "\n"


class FakeRun:
    """Stands in for docker_client.run: records each call and answers one canned result."""

    def __init__(self, code: int, output: str) -> None:
        self.code, self.output = code, output
        self.calls: list[tuple[str, list[str], dict[str, Any]]] = []

    def __call__(
        self, client: object, image: str, command: list[str], **kwargs: Any
    ) -> tuple[int, str]:
        self.calls.append((image, command, kwargs))
        return self.code, self.output


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(code: int = 0, output: str | None = None, **changes: Any) -> FakeRun:
        fake = FakeRun(
            code, container_output(report_document(**changes)) if output is None else output
        )
        monkeypatch.setattr(smoke.docker_client, "run", fake)
        return fake

    return install


def check(**overrides: Any) -> smoke.SmokeResult:
    arguments: dict[str, Any] = {
        "python": "3.13",
        "prefect_version": "3.9.1",
        "extras_present": ["docker"],
        "extras_absent": ["aws"],
    }
    arguments.update(overrides)
    return smoke.check(object(), "sha256:image", **arguments)  # type: ignore[arg-type]


def test_one_container_through_the_entrypoint_checks_everything(fake_run: Any) -> None:
    fake = fake_run(output=container_output(report_document(), noise="+pip install x\n"))

    assert check() == smoke.SmokeResult(
        prefect_version="3.9.1", python_version="3.13.5", machine="x86_64"
    )

    assert len(fake.calls) == 1
    image, command, options = fake.calls[0]
    assert image == "sha256:image"
    assert command[:2] == ["python", "-c"] and command[3:] == ["docker", "aws"]
    # The image's own entrypoint (tini + entrypoint.sh) must start the probe.
    assert options.get("entrypoint") is None


def test_parse_report_reads_pid1_from_cmdline_or_comm() -> None:
    parsed = smoke.parse_report(0, container_output(report_document()))
    assert parsed.pid1 == "tini"
    assert parsed.extras["aws"] == smoke.Extra(packages=("boto3", "s3fs"), installed=())

    by_path = report_document(pid1={"cmdline": ["/usr/bin/tini", "--"], "comm": "tini"})
    assert smoke.parse_report(0, container_output(by_path)).pid1 == "tini"
    kernel_thread = report_document(pid1={"cmdline": [], "comm": "tini"})
    assert smoke.parse_report(0, container_output(kernel_thread)).pid1 == "tini"


def test_nightly_accepts_any_version_and_bare_0x_output_is_read(fake_run: Any) -> None:
    fake_run(prefect={"code": 0, "output": "0.14.10\n"})

    assert check(prefect_version=None).prefect_version == "0.14.10"


@pytest.mark.parametrize(
    ("changes", "overrides", "message"),
    [
        (
            {"pid1": {"cmdline": ["python", "-c", "..."], "comm": "python"}},
            {},
            "PID 1 is 'python', not tini",
        ),
        (
            {"prefect": {"code": 1, "output": "Traceback\nImportError: no module named x\n"}},
            {},
            "`prefect version` exited with 1: ImportError: no module named x",
        ),
        ({"prefect": {"code": 0, "output": "  \n"}}, {}, "`prefect version` printed nothing"),
        ({}, {"prefect_version": "3.9.0"}, "`prefect version` reports 3.9.1, expected 3.9.0"),
        ({}, {"python": "3.11"}, "`python` in the image is Python 3.13.5, expected Python 3.11"),
        ({"python": "3.1.4"}, {"python": "3.1"}, None),
        ({}, {"python": "3.1"}, "is Python 3.13.5, expected Python 3.1$"),
        ({}, {"machine": "aarch64"}, "the image runs as x86_64, expected aarch64"),
        ({}, {"machine": "x86_64"}, None),
        ({"machine": ""}, {"machine": "x86_64"}, "runs as an unknown machine, expected x86_64"),
        (
            {"extras_error": "PackageNotFoundError: prefect"},
            {},
            "extras check failed to run: PackageNotFoundError: prefect",
        ),
        (
            {
                "extras": {
                    "docker": {"packages": [], "installed": []},
                    "aws": {"packages": [], "installed": []},
                }
            },
            {},
            "prefect declares no packages for extra 'docker'",
        ),
        (
            {
                "extras": {
                    "docker": {"packages": ["docker", "six"], "installed": ["docker"]},
                    "aws": {"packages": [], "installed": []},
                }
            },
            {},
            "extra 'docker' is missing six",
        ),
        (
            {
                "extras": {
                    "docker": {"packages": ["docker"], "installed": ["docker"]},
                    "aws": {"packages": ["boto3"], "installed": ["boto3"]},
                }
            },
            {},
            "a core image must not carry extra 'aws', but has boto3",
        ),
    ],
)
def test_each_failing_check_is_named_in_one_line(
    fake_run: Any, changes: dict[str, Any], overrides: dict[str, Any], message: str | None
) -> None:
    fake_run(**changes)

    if message is None:
        check(**overrides)
        return
    with pytest.raises(BuildError, match=message) as caught:
        check(**overrides)
    assert "\n" not in str(caught.value)


def test_the_first_failing_check_wins(fake_run: Any) -> None:
    fake_run(python="3.11.2", prefect={"code": 0, "output": "Version: 3.9.0\n"})

    with pytest.raises(BuildError, match=r"`prefect version` reports 3\.9\.0"):
        check()


def test_extras_error_does_not_matter_without_extras(fake_run: Any) -> None:
    fake_run(extras={}, extras_error="PackageNotFoundError: prefect")

    assert check(extras_present=[], extras_absent=[]).python_version == "3.13.5"


@pytest.mark.parametrize(
    ("code", "output", "message"),
    [
        (
            127,
            "entrypoint: EXTRA_PIP_PACKAGES could not be installed\n",
            "exited with 127: entrypoint",
        ),
        (0, "no report here\n", "the smoke probe exited with 0: no report here"),
        (1, "", r"exited with 1: \(no output\)"),
        (0, smoke.REPORT_MARKER + "{not json\n", "the smoke probe's report is malformed"),
        (0, smoke.REPORT_MARKER + '{"pid1": {}}\n', "the smoke probe's report is malformed"),
    ],
)
def test_a_probe_that_did_not_report_is_one_line(
    fake_run: Any, code: int, output: str, message: str
) -> None:
    fake_run(code=code, output=output)

    with pytest.raises(BuildError, match=message) as caught:
        check()
    assert "\n" not in str(caught.value)
