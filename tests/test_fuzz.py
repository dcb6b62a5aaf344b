"""The whole HTTP API under a grammar-based fuzzer (tests/fuzzing.py), on each database."""

from __future__ import annotations

import gc
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from twisted.internet.task import Clock

from imaged.store.sql import SQLMetadataStore

from .fuzzing import (
    METADEF_GRAMMAR,
    METADEF_ROUTES,
    Checker,
    Findings,
    LogWatch,
    Request,
    Worlds,
    is_metadef,
    requests,
)

#: Requests per database on every test run; ``--fuzz-count N`` or ``IMAGED_FUZZ_COUNT=N``
#: for long runs.
CI_COUNT = 3000
#: Requests per run of the state machine, each run in a freshly seeded service: long enough
#: for a create, an upload and a patch of what was created to meet.
STEPS = 30


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[Path]:
    """
    Hypothesis' caches (the constants it gathers from our sources, unicode tables) in the
    test's temporary directory: with no example database either, runs leave no files in the
    repository.
    """
    set_hypothesis_home_dir(tmp_path)
    yield tmp_path
    set_hypothesis_home_dir(None)  # back to the default (or $HYPOTHESIS_STORAGE_DIRECTORY)


def fuzz_count(config: pytest.Config) -> int:
    """How many requests to send per database (see ``CI_COUNT``)."""
    option: int | None = config.getoption("--fuzz-count", None)
    if option is not None:
        return option
    return int(os.environ.get("IMAGED_FUZZ_COUNT", CI_COUNT))


def fuzz_settings(count: int, derandomize: bool) -> settings:
    """
    Hypothesis as the fuzzer's generator: ``count`` requests in runs of ``STEPS``, no
    example database (runs leave no files), no deadline, and no shrinking: problems are not
    raised inside hypothesis but collected by kind (``Findings``), so that one run reports
    every kind of bug, each minimized by replaying it (seconds, where hypothesis' shrinker
    replaying whole runs takes minutes).  The grammar makes 100 kB bodies from small draws on
    purpose: the data-size health checks do not apply.
    """
    return settings(
        # Runs end early when hypothesis' buffer fills up (big bodies), or when it makes a run
        # from parts of others and the end of one lands mid-run (the catalog's requests vary
        # most in size: a run in ten ends early, some after a few steps): half as many runs
        # again as ``count`` needs, those past ``count`` sending nothing (``fuzz_machine``).
        max_examples=max(1, -(-count * 3 // (STEPS * 2))),
        stateful_step_count=STEPS,
        derandomize=derandomize,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.large_base_example),
    )


def fuzz_machine(checkers: Callable[[], Checker], findings: Findings, count: int,
                 sent: list[int], seen: Counter[str] | None = None
                 ) -> type[RuleBasedStateMachine]:
    """
    The state machine: each run starts a seeded service; its one rule sends a request from
    the grammar (until ``count`` are sent) and notes what it broke, and in ``seen`` which
    API and status it was (``images 200``, ``metadefs 404``); teardown checks the service is
    still alive.  The service is made at the first request sent: runs past ``count`` make
    none (they cannot stop drawing: a rule that depends on the count is a flaky strategy).
    """

    class FuzzAPI(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.checker: Checker | None = None

        @rule(request=requests)
        def send(self, request: Request) -> None:
            if sent[0] < count:
                sent[0] += 1
                if self.checker is None:
                    self.checker = checkers()
                findings.add(self.checker.run(request))
                if seen is not None:
                    response = self.checker.last_response
                    api = "metadefs" if is_metadef(request) else "images"
                    seen[f"{api} {response.code if response is not None else '-'}"] += 1

        def teardown(self) -> None:
            if self.checker is not None:
                findings.add(self.checker.alive())

    return FuzzAPI


def summary(seen: Counter[str]) -> str:
    """How many requests each API had, and its statuses (``0``: the connection closed)."""
    lines = []
    for api in ("images", "metadefs"):
        codes = {key.split()[1]: n for key, n in seen.items() if key.startswith(api + " ")}
        total = sum(codes.values())
        share = total * 100 // max(1, sum(seen.values()))
        statuses = ", ".join(f"{code}: {codes[code]}"
                             for code in sorted(codes, key=lambda c: (len(c), c)))
        lines.append(f"  {api}: {total} requests ({share}%): {statuses}")
    return "\n".join(lines)


def test_fuzz(
    request: pytest.FixtureRequest,
    database: str,
    metadata_stores: Callable[[], SQLMetadataStore],
    clock: Clock,
    hypothesis_home: Path,
) -> None:
    """
    ``fuzz_count`` requests from the grammar of tests/fuzzing.py, over every route (the
    images' and, for nearly a quarter of the requests, the metadata definitions catalog's)
    and many paths that are none, against the daemon's own Site on this database.  For each:
    an answer below 500, an error in Glance's format, nothing logged as an error or with a
    traceback, and, if it was refused (4xx), every image row, tag, property, member and blob,
    and every namespace, definition, resource type and association, as before; after each
    run of ``STEPS`` requests the service still answers.  CI runs are derandomized (the same
    requests every time); long runs pick a seed and print it, ``IMAGED_FUZZ_SEED`` replays.
    It prints how many requests each API had, by status.
    """
    count = fuzz_count(request.config)
    chosen = os.environ.get("IMAGED_FUZZ_SEED")
    long_run = count != CI_COUNT or chosen is not None
    seed = int(chosen) if chosen else random.randrange(2**32) if long_run else None
    command = f"pytest tests/test_fuzz.py -k {database}"
    rerun = (f"IMAGED_FUZZ_SEED={seed} {command} --fuzz-count {count}" if seed is not None
             else f"{command}  (derandomized: the same requests every run)")
    store = metadata_stores()
    print(f"fuzzing {count} requests on {store.dialect}; re-run: {rerun}")
    sent = [0]
    seen: Counter[str] = Counter()
    with LogWatch() as watch:
        # PostgreSQL's world has two named stores (the multi-store API, X-Image-Meta-Store,
        # import stores, per-store delete, ?prefer); SQLite's one store, as a default site.
        worlds = Worlds(store, clock, multi_store=database == "postgresql")
        findings = Findings(worlds, watch)
        machine = fuzz_machine(lambda: Checker(worlds(), watch), findings, count, sent, seen)
        if seed is not None:
            machine = hypothesis_seed(seed)(machine)
        run_state_machine_as_test(machine, settings=fuzz_settings(count, seed is None))
        gc.collect()  # every run's Deferreds: one failing unhandled would be logged now
        findings.add(Checker(worlds(), watch).alive())
        print(summary(seen))
        assert sent[0] == count, f"only {sent[0]} of {count} requests were sent"
        assert not findings, f"{findings.report()}\n\non {store.dialect}; re-run: {rerun}"


def test_grammar_has_every_catalog_route() -> None:
    """
    The grammar draws every route of the metadata definitions catalog with its own query,
    headers and bodies (``METADEF_GRAMMAR``): a route added to ``imaged.web.metadefs.ROUTES``
    is drawn anyway, bare, and this fails until it has its grammar.
    """
    assert set(METADEF_GRAMMAR) == {(method, rule) for rule, method, _ in METADEF_ROUTES}
