"""The demo's code location: its sources, kept apart from the ones a user declares.

`make demo` (and the end-to-end tests) load it next to `ingestion_platform.definitions`
through `ingestion_platform/demo/workspace.yaml`; a deployment loads only the latter.
"""

import functools
from pathlib import Path

import dagster as dg

import ingestion_platform.demo.defs as demo_sources
from ingestion_platform.definitions import component_type_docs_skipped, platform_definitions


@dg.definitions
def defs() -> dg.Definitions:
    """Load the demo's declared sources and bind the warehouse they land in."""
    return _built()


# Dagster calls `defs` each time it resolves the location, six times in one CLI run; the
# declarations do not change within a process (a reload starts a new one).
@functools.cache
def _built() -> dg.Definitions:
    project_root = Path(__file__).resolve().parents[2]
    with component_type_docs_skipped():
        declared = dg.load_defs(defs_root=demo_sources, project_root=project_root)
    return platform_definitions(declared)
