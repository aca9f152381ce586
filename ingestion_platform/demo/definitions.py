"""The demo's code location: its sources, kept apart from the ones a user declares.

`make demo` (and the end-to-end tests) load it next to `ingestion_platform.definitions`
through `ingestion_platform/demo/workspace.yaml`; a deployment loads only the latter.
"""

from pathlib import Path

import dagster as dg

import ingestion_platform.demo.defs as demo_sources
from ingestion_platform.definitions import platform_definitions


@dg.definitions
def defs() -> dg.Definitions:
    """Load the demo's declared sources and bind the warehouse they land in."""
    project_root = Path(__file__).resolve().parents[2]
    return platform_definitions(dg.load_defs(defs_root=demo_sources, project_root=project_root))
