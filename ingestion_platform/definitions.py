"""The code location: every source declared under defs/, plus the shared warehouse resource."""

import functools
import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster.components.core import load_defs as load_defs_module

from ingestion_platform.core.defs_yaml import libyaml_declarations
from ingestion_platform.core.plain_templates import plain_strings_unrendered
from ingestion_platform.core.warehouse import WarehouseResource
from ingestion_platform.slot_guard import guarded_in_process_executor


def platform_definitions(declared: dg.Definitions) -> dg.Definitions:
    """Declared sources with what every code location of the platform shares."""
    # Ingestion steps wait on one warehouse anyway (the pool), so a run gains nothing from a
    # process per step and loses the start-up of one: steps run in the run's own process,
    # which first frees pool slots that killed runs still hold (slot_guard.py).
    return dg.Definitions.merge(
        declared,
        dg.Definitions(
            resources={"warehouse": WarehouseResource()}, executor=guarded_in_process_executor
        ),
    )


def load_declared_sources(path_within_project: Path) -> dg.Definitions:
    """What `dg.load_from_defs_folder` loads, in time linear in the number of sources."""
    # Dagster 1.13 finds each component's declaration by walking the whole declaration tree
    # again, once per component: quadratic, 6 s of the load at 1,000 sources. Handing the tree
    # every declaration it would find up front leaves nothing to walk; the declarations are
    # the tree's own, and a reload that invalidates a folder drops them with the rest of its
    # cache (bench/README.md, "Definitions at scale"). The declarations are read with libyaml
    # and attribute strings without a template are not compiled as one (core/defs_yaml.py,
    # core/plain_templates.py), each through one Dagster name swapped while this runs. None of it
    # is documented API: test_definitions.py checks that this loads what
    # `load_from_defs_folder` loads and that each swap answers as the original, so an upgrade
    # that changes them fails there.
    with warnings.catch_warnings(), _collector_paused():
        # As `load_from_defs_folder` does: no beta, preview or deprecation notices.
        for category in (
            dg.BetaWarning,
            dg.PreviewWarning,
            dg.SupersessionWarning,
            DeprecationWarning,
        ):
            warnings.simplefilter("ignore", category=category)
        tree = dg.ComponentTree.for_project(path_within_project)
        with libyaml_declarations():
            root = tree.find_root_decl()
        for loc, declaration in root.iterate_loc_component_decl_pairs():
            tree.state_tracker.set_cache_data(loc, component_decl=declaration)
        with plain_strings_unrendered(), component_type_docs_skipped():
            return tree.build_defs()


@contextmanager
def component_type_docs_skipped() -> Iterator[None]:
    """While open, a component tree's root leaves out the JSON of every installed component type.

    Dagster's root component imports every library that registers components (dagster-aws,
    dagster-dlt, …) and writes all their types' schemas into the location's metadata for the
    UI's component browser: about 1.1 s of every load, in every run's process, for a page
    nobody running ingestion opens. `dg list components` and `dg check yaml` read the same
    types from the environment and are unaffected. The seam is `get_library_json_enriched_defs`,
    looked up by name at each call (test_definitions.py checks the load without it).
    """
    original = load_defs_module.get_library_json_enriched_defs
    load_defs_module.get_library_json_enriched_defs = _tree_only
    try:
        yield
    finally:
        load_defs_module.get_library_json_enriched_defs = original


def _tree_only(tree: dg.ComponentTree | None) -> dg.Definitions:
    return dg.Definitions(component_tree=tree)


@contextmanager
def _collector_paused() -> Iterator[None]:
    # Loading keeps nearly everything it allocates, so each full collection while it runs
    # walks a heap it cannot shrink: 6 of them, about 0.4 s at 1,000 sources. The cycles it
    # does leave are collected once it is done.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dg.definitions
def defs() -> dg.Definitions:
    """Load the declared sources and bind the warehouse they land in."""
    return _built()


# Dagster calls `defs` each time it resolves the location, six times in one CLI run; the
# declarations do not change within a process (a reload starts a new one).
@functools.cache
def _built() -> dg.Definitions:
    return platform_definitions(load_declared_sources(Path(__file__).parent))
