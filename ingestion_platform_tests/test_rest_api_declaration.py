"""Mistakes in an API source's defs.yaml are caught before a run, naming file:line, field, fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster.components.testing.utils import create_defs_folder_sandbox

from ingestion_platform_tests.dg_project import write_project
from ingestion_platform_tests.music import music_attributes

TYPE = "ingestion_platform.sources.api.component.RestApiSource"


def _write(folder: Path, attributes: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    defs_file = folder / "defs.yaml"
    document = {"type": TYPE, "attributes": attributes}
    defs_file.write_text(yaml.safe_dump(document, sort_keys=False))
    return defs_file


def _line(defs_file: Path, text: str) -> int:
    return defs_file.read_text().splitlines().index(text) + 1


def _load_error(attributes: dict[str, Any], line: str) -> str:
    """The error loading a source declared with `attributes` raises, with `<file>:<line>`
    (of the line `line`) replaced by `defs.yaml:<N>`."""
    with create_defs_folder_sandbox() as sandbox:
        defs_file = _write(sandbox.defs_folder_path / "music", attributes)
        with sandbox.build_component_tree() as tree, pytest.raises(Exception) as raised:
            tree.build_defs(defs_file.parent)
        error: BaseException | None = raised.value
        while error is not None and type(error).__name__ != "DeclarationError":
            error = error.__cause__ or error.__context__
        assert error is not None, raised.value
        return str(error).replace(f"{defs_file}:{_line(defs_file, line)}:", "defs.yaml:<N>:")


def test_a_paginator_typo_names_file_line_field_value_allowed_values_and_fix() -> None:
    attributes = music_attributes()
    attributes["resources"][1]["endpoint"]["paginator"] = {"type": "header_lnik"}
    message = _load_error(attributes, "        type: header_lnik")
    assert message == (
        "defs.yaml:<N>: resources[1].endpoint.paginator.type: unknown paginator "
        "'header_lnik'; dlt knows auto, cursor, header_cursor, header_link, json_link, "
        "offset, page_number, single_page. Fix: write e.g. `type: header_link`."
    )


def test_a_paginator_setting_it_does_not_take_is_named_with_the_ones_it_does() -> None:
    attributes = music_attributes()
    attributes["resources"][0]["endpoint"]["paginator"]["next_url_pth"] = "albums.next"
    message = _load_error(attributes, "        next_url_pth: albums.next")
    assert message == (
        "defs.yaml:<N>: resources[0].endpoint.paginator.next_url_pth: the json_link "
        "paginator has no setting 'next_url_pth'; it takes next_url_path. Fix: remove or "
        "rename 'next_url_pth'."
    )


def test_other_endpoint_mistakes_are_dlts_own_validation_on_the_field() -> None:
    attributes = music_attributes()
    attributes["resources"][0]["endpoint"]["method"] = "FETCH"
    message = _load_error(attributes, "      method: FETCH")
    assert message == (
        "defs.yaml:<N>: resources[0].endpoint.method: "
        "field `method=FETCH` is not one of: ['GET', 'POST'] (dlt rest_api). Fix: see the "
        "endpoint settings of dlt's rest_api source."
    )


def test_errors_of_our_own_settings_carry_the_line_too() -> None:
    attributes = music_attributes(limits={"page_size": 100, "max_page_size": 50})
    message = _load_error(attributes, "    page_size: 100")
    assert message == (
        "defs.yaml:<N>: limits.page_size: 100 is more "
        "than the API allows (50). Fix: set page_size to at most 50."
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path)
    return tmp_path


def _dg(project: Path, *args: str) -> str:
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode != 0
    # Drop the quoted YAML snippet; keep dg's one-line verdicts.
    output = completed.stdout + completed.stderr
    return "\n".join(line for line in output.splitlines() if not re.match(r"\s*\d* \|", line))


def test_dg_check_yaml_names_the_allowed_values_and_the_fix_of_batch_settings(
    project: Path,
) -> None:
    # One file: `dg check yaml` validates one declaration per component type.
    batch = {"every": "fortnight", "rows": -5, "max_wait": "15x"}
    defs_file = _write(project / "broken_project" / "defs" / "music", music_attributes(batch=batch))

    output = _dg(project, "check", "yaml")

    assert (
        f"{defs_file}:{_line(defs_file, '    every: fortnight')} - {TYPE} attributes.batch.every "
        '"one of minute, hour, day, week or month, e.g. `every: day`; for other periods use '
        "`cron: '0 0 */14 * *'`\" was expected"
    ) in output
    assert (
        f"{defs_file}:{_line(defs_file, '    rows: -5')} - {TYPE} attributes.batch.rows "
        "'a positive number of rows, e.g. `rows: 100000`' was expected"
    ) in output
    assert (
        f"{defs_file}:{_line(defs_file, '    max_wait: 15x')} - {TYPE} attributes.batch.max_wait "
        "'a duration, e.g. `max_wait: 15m` (s, m, h or d)' was expected"
    ) in output
    assert "is not valid under any of the given schemas" not in output


def test_dg_check_defs_catches_a_paginator_typo_with_file_and_line(project: Path) -> None:
    attributes = music_attributes()
    attributes["resources"][1]["endpoint"]["paginator"] = {"type": "header_lnik"}
    defs_file = _write(project / "broken_project" / "defs" / "music", attributes)

    output = _dg(project, "check", "defs")

    shown = defs_file.relative_to(project)  # dg runs in the project, paths are relative
    assert (
        f"{shown}:{_line(defs_file, '        type: header_lnik')}: "
        "resources[1].endpoint.paginator.type: unknown paginator 'header_lnik'"
    ) in output
    assert "DictValidationException" not in output
