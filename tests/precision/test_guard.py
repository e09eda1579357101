"""The accuracy guard's search, over a made-up conversion whose per-unit error is known: the
search itself is pure (building and scoring are handed in), so the choices can be checked exactly."""

from __future__ import annotations

from glmix_deploy.precision.guard import Score, run_guard
from glmix_deploy.precision.units import Unit

# Error each unit adds when converted; the target is met when the total stays under LIMIT.
ERRORS = {"a": 0.05, "b": 0.5, "c": 0.2, "d": 0.01}
UNITS = [Unit(name, (f"{name}1", f"{name}2")) for name in ERRORS]
LIMIT = 0.1


def build(excluded: set[str]) -> frozenset[str]:
    """The 'graph': the units converted, i.e. not wholly kept out."""
    built.append(frozenset(excluded))
    return frozenset(u.name for u in UNITS if not set(u.nodes) <= excluded)


def evaluate(converted: frozenset[str]) -> Score:
    error = sum(ERRORS[name] for name in converted)
    return Score(error < LIMIT, 1.0 - error, None, None, error, [] if error < LIMIT else ["too far"])


built: list[frozenset[str]] = []


def test_keeps_units_out_most_sensitive_first_until_the_target_is_met():
    said: list[str] = []
    result = run_guard([UNITS], build, evaluate, say=said.append, what="in fp8")
    assert [u.name for u in result.excluded] == ["b", "c"]  # 0.05 + 0.01 remain: under the limit
    assert result.sensitivity == ERRORS
    assert not result.first.passed and result.final.passed
    assert result.model == frozenset({"a", "d"}) and result.full_model == frozenset(ERRORS)
    assert result.excluded_nodes == ["b1", "b2", "c1", "c2"]
    assert [s["excluded"] for s in result.steps] == [[], ["b"], ["b", "c"]]
    assert said[0].startswith("everything in fp8") and said[-1].endswith("meets the target")
    assert result.seconds >= 0 and result.to_dict()["excluded"] == ["b", "c"]


def test_nothing_is_measured_when_everything_converted_passes():
    built.clear()
    result = run_guard([UNITS], build, lambda converted: Score(True, 1.0, None, None, 0.0), forced=["x"])
    assert result.excluded == [] and result.sensitivity == {} and result.forced == ["x"]
    assert built == [frozenset({"x"})]  # one build, forced nodes kept out


def test_a_later_phase_is_tried_only_when_the_earlier_one_is_not_enough():
    cheap = [UNITS[0], UNITS[3]]  # a, d: keeping both out leaves 0.7
    result = run_guard([cheap, [UNITS[1], UNITS[2]]], build, evaluate)
    assert [u.name for u in result.excluded] == ["a", "d", "b", "c"] and result.final.passed
    # Ranking the second phase keeps the first phase's units out.
    built.clear()
    run_guard([cheap, [UNITS[1], UNITS[2]]], build, evaluate, forced=["f"])
    assert all("f" in excluded for excluded in built)


def test_the_rank_function_orders_and_the_evaluate_function_decides():
    def reversed_rank(converted: frozenset[str]) -> Score:
        return Score(False, 0.0, None, None, -evaluate(converted).error)

    result = run_guard([UNITS], build, evaluate, rank=reversed_rank)
    assert [u.name for u in result.excluded][:2] == ["d", "a"]  # least sensitive first under `rank`
    assert result.final.passed == (sum(ERRORS[u] for u in result.model) < LIMIT)


def test_refinement_converts_again_every_part_the_target_allows():
    """Two blocks fail alone; within them only one node each really needs to stay out."""
    bad = {"a1", "b2"}
    blocks = [Unit("A", ("a1", "a2", "a3")), Unit("B", ("b1", "b2"))]

    def evaluate(model):  # the "model" is the set of nodes kept out
        kept_out = set(model)
        return Score(bad <= kept_out, 1.0 if bad <= kept_out else 0.5, None, None,
                     float(len(bad - kept_out)))

    def refine(unit):
        return [Unit(n, (n,), "node") for n in unit.nodes]

    result = run_guard([blocks], lambda excluded: frozenset(excluded), evaluate, rank=evaluate, refine=refine)
    assert result.final.passed and set(result.excluded_nodes) == bad
    assert {u.name for u in result.excluded} == {"A", "B"}
    again = [s["converted_again"] for s in result.steps if "converted_again" in s and s["kept"]]
    assert again == ["b1", "a2", "a3"]  # the last-excluded (least sensitive) block first
