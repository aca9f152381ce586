"""The code location: every source declared under defs/, plus the shared warehouse resource."""

from pathlib import Path

import dagster as dg

from ingestion_platform.warehouse import WarehouseResource


def platform_definitions(declared: dg.Definitions) -> dg.Definitions:
    """Declared sources with what every code location of the platform shares."""
    # Ingestion steps wait on one warehouse anyway (the pool), so a run gains nothing from a
    # process per step and loses the start-up of one: steps run in the run's own process.
    return dg.Definitions.merge(
        declared,
        dg.Definitions(
            resources={"warehouse": WarehouseResource()}, executor=dg.in_process_executor
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Load the declared sources and bind the warehouse they land in."""
    return platform_definitions(dg.load_from_defs_folder(path_within_project=Path(__file__).parent))
