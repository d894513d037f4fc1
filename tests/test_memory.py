"""The memory planner: hand-built lifetimes, a property over random ones, and a size that must stay fast."""

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netc.compiler.passes import memory
from netc.compiler.passes.memory import Buffer, MemoryPlan, live_bytes_lower_bound, plan_memory, verify_plan


def planned(buffers, alignment=64) -> MemoryPlan:
    plan = plan_memory(buffers, alignment)
    verify_plan(buffers, plan)
    return plan


# --- hand examples -----------------------------------------------------------------------------------------


def test_a_chain_reuses_the_memory_of_buffers_that_died():
    # a -> b -> c: a is dead by the time c is written, so c can take a's bytes.
    chain = [Buffer("a", 1000, 0, 1), Buffer("b", 1000, 1, 2), Buffer("c", 1000, 2, 3)]
    plan = planned(chain)
    assert plan.offsets["c"] == plan.offsets["a"] != plan.offsets["b"]
    assert plan.arena_bytes == 1024 + 1000 < plan.naive_bytes == 3 * 1024
    assert plan.aliases == {}


def test_buffers_live_at_once_never_share_memory():
    # Kernel 5 reads x and y while it writes z: all three are live there.
    together = [Buffer("x", 100, 0, 5), Buffer("y", 100, 3, 5), Buffer("z", 100, 5, 6)]
    plan = planned(together)
    assert len(set(plan.offsets.values())) == 3


def test_an_elementwise_output_takes_over_its_dying_input_in_place():
    chain = [Buffer("a", 1000, 0, 1), Buffer("b", 1000, 1, 2, ("a",)), Buffer("c", 800, 2, 3, ("b",))]
    plan = planned(chain)
    assert plan.aliases == {"b": "a", "c": "b"}
    assert plan.offsets == {"a": 0, "b": 0, "c": 0}
    assert plan.arena_bytes == 1000


def test_no_in_place_alias_when_the_input_lives_on():
    # a is still read by kernel 2, after b is written at kernel 1: writing b over it would corrupt it.
    buffers = [Buffer("a", 1000, 0, 2), Buffer("b", 1000, 1, 2, may_alias=("a",))]
    plan = planned(buffers)
    assert plan.aliases == {}
    assert plan.offsets["a"] != plan.offsets["b"]


def test_no_in_place_alias_into_a_smaller_input_or_one_not_offered():
    smaller = [Buffer("a", 100, 0, 1), Buffer("b", 200, 1, 2, may_alias=("a",))]
    not_offered = [Buffer("a", 100, 0, 1), Buffer("b", 100, 1, 2)]
    assert planned(smaller).aliases == {} and planned(not_offered).aliases == {}


def test_an_input_is_taken_over_by_one_output_only():
    buffers = [Buffer("a", 100, 0, 1), Buffer("b", 100, 1, 2, ("a",)), Buffer("c", 100, 1, 2, ("a",))]
    plan = planned(buffers)
    assert plan.aliases == {"b": "a"}
    assert plan.offsets["c"] != plan.offsets["a"]


def test_the_tightest_input_is_taken_over():
    buffers = [Buffer("big", 4096, 0, 1), Buffer("fit", 512, 0, 1), Buffer("out", 500, 1, 2, ("big", "fit"))]
    assert planned(buffers).aliases == {"out": "fit"}


def test_two_buffers_of_one_kernel_naming_each_other_form_no_cycle():
    buffers = [Buffer("p", 64, 3, 3, ("q",)), Buffer("q", 64, 3, 3, ("p",))]
    assert len(planned(buffers).aliases) == 1


def test_leaves_live_throughout_and_empty_buffers_take_no_room():
    # The CPU backend gives inputs and parameters the range [-1, len(kernels)].
    buffers = [Buffer("w", 300, -1, 4), Buffer("t", 300, 0, 1), Buffer("u", 300, 2, 3), Buffer("e", 0, 0, 4)]
    plan = planned(buffers)
    assert plan.arena_bytes == 320 + 300
    assert plan.offsets["t"] == plan.offsets["u"]


# --- resident state: a new value put in its leaf's slot -----------------------------------------------------


def test_a_new_value_takes_over_its_leaf_once_the_leaf_is_read_no_more():
    # w is read up to kernel 2; its new value is written at kernel 4 and must end the step in w's bytes.
    buffers = [Buffer("w", 256, -1, 2), Buffer("t", 256, 0, 3), Buffer("new", 256, 4, 5, home="w")]
    plan = planned(buffers)
    assert plan.aliases == {"new": "w"} and plan.offsets["new"] == plan.offsets["w"] != plan.offsets["t"]


def test_a_new_value_takes_over_its_leaf_in_the_kernel_that_reads_it_last_if_in_place():
    buffers = [Buffer("w", 256, -1, 3), Buffer("m", 256, -1, 3), Buffer("new", 256, 3, 5, ("w", "m"), "w")]
    plan = planned(buffers)
    assert plan.aliases == {"new": "w"} and plan.offsets["new"] == plan.offsets["w"] != plan.offsets["m"]


def test_a_home_taken_is_not_offered_to_another_buffer():
    buffers = [Buffer("w", 256, -1, 3), Buffer("x", 256, 3, 4, ("w",)), Buffer("new", 256, 3, 5, ("w",), "w")]
    plan = planned(buffers)
    assert plan.aliases == {"new": "w"} and plan.offsets["x"] != plan.offsets["w"]


@pytest.mark.parametrize("buffers, reason", [
    ([Buffer("w", 256, -1, 4), Buffer("new", 256, 3, 5, home="w")], "read after the new value is written"),
    ([Buffer("w", 256, -1, 3), Buffer("new", 256, 3, 5, home="w")], "read by the writer, not in place"),
    ([Buffer("w", 128, -1, 1), Buffer("new", 256, 3, 5, home="w")], "smaller"),
    ([Buffer("w", 256, -1, 1), Buffer("new", 256, 3, 5, home="v")], "no such buffer"),
    ([Buffer("w", 256, -1, 1), Buffer("a", 256, 3, 5, home="w"), Buffer("b", 256, 3, 5, home="w")], "two"),
    ([Buffer("v", 256, -1, -1), Buffer("w", 256, 0, 1, home="v"), Buffer("n", 256, 3, 5, home="w")], "chain"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_a_home_the_buffer_cannot_take_over_is_refused(buffers, reason):
    with pytest.raises(ValueError, match="home"):
        plan_memory(buffers)


def test_verify_plan_catches_a_home_not_taken_or_taken_too_early():
    buffers = [Buffer("w", 256, -1, 2), Buffer("new", 256, 4, 5, home="w")]
    with pytest.raises(AssertionError, match="not in its home"):
        verify_plan(buffers, MemoryPlan({"w": 0, "new": 256}, 512, 512, {}))
    read_late = [Buffer("w", 256, -1, 4), Buffer("new", 256, 3, 5, home="w")]
    with pytest.raises(AssertionError, match="does not end"):
        verify_plan(read_late, MemoryPlan({"w": 0, "new": 0}, 256, 512, {"new": "w"}))
    not_home = [Buffer("w", 256, -1, 2), Buffer("new", 256, 4, 5)]
    with pytest.raises(AssertionError, match="may not alias"):
        verify_plan(not_home, MemoryPlan({"w": 0, "new": 0}, 256, 512, {"new": "w"}))


def test_offsets_follow_the_alignment_asked_for():
    buffers = [Buffer(i, 10, 0, 0) for i in range(4)]
    assert sorted(planned(buffers, alignment=16).offsets.values()) == [0, 16, 32, 48]
    assert planned([], alignment=16) == MemoryPlan({}, 0, 0, {}, 16)


def test_bad_buffers_are_refused():
    with pytest.raises(ValueError, match="ends before"):
        plan_memory([Buffer("a", 8, 3, 2)])
    with pytest.raises(ValueError, match="two buffers"):
        plan_memory([Buffer("a", 8, 0, 1), Buffer("a", 8, 0, 1)])


def test_verify_plan_catches_overlaps_and_illegal_aliases():
    buffers = [Buffer("a", 100, 0, 2), Buffer("b", 100, 1, 3, ("a",))]
    with pytest.raises(AssertionError, match="overlap"):
        verify_plan(buffers, MemoryPlan({"a": 0, "b": 64}, 192, 256, {}))
    with pytest.raises(AssertionError, match="does not end"):
        verify_plan(buffers, MemoryPlan({"a": 0, "b": 0}, 100, 256, {"b": "a"}))
    with pytest.raises(AssertionError, match="misaligned"):
        verify_plan(buffers, MemoryPlan({"a": 0, "b": 100}, 200, 256, {}))
    with pytest.raises(AssertionError, match="past the arena"):
        verify_plan(buffers, MemoryPlan({"a": 0, "b": 128}, 200, 256, {}))


# --- properties over random lifetimes ---------------------------------------------------------------------


@st.composite
def lifetimes(draw):
    """Up to 40 buffers over up to 60 kernels, each may_alias some of those that end where it begins."""
    kernels = draw(st.integers(1, 60))
    count = draw(st.integers(0, 40))
    size = st.one_of(st.integers(1, 200), st.integers(1, 10**6))  # small sizes stress the alignment
    buffers = []
    for i in range(count):
        first = draw(st.integers(0, kernels - 1))
        last = draw(st.integers(first, min(kernels - 1, first + draw(st.sampled_from([0, 1, 3, kernels])))))
        ending_here = [b.name for b in buffers if b.last == first]
        offered = draw(st.lists(st.sampled_from(ending_here or [i]), max_size=3) if i else st.just([]))
        buffers.append(Buffer(i, draw(size), first, last, tuple(offered)))
    return buffers


@st.composite
def lifetimes_with_resident_state(draw):
    """lifetimes(), plus up to 8 leaves (live from before the first kernel, read up to some kernel), each with
    a new value written at or after the leaf's last read and live to the end, whose home is the leaf. A rival
    buffer may be offered the leaf in place as well, and must yield to the new value."""
    buffers = draw(lifetimes())
    end = max((b.last for b in buffers), default=0) + 1
    for j in range(draw(st.integers(0, 8))):
        leaf = Buffer(f"leaf{j}", draw(st.integers(1, 10**5)), -1, draw(st.integers(-1, end - 1)))
        first = draw(st.integers(max(leaf.last, 0), end - 1))
        offered = (leaf.name,) if first == leaf.last or draw(st.booleans()) else ()
        new = Buffer(f"new{j}", draw(st.integers(1, leaf.nbytes)), first, end, offered, home=leaf.name)
        rival = Buffer(f"rival{j}", leaf.nbytes, first, first, (leaf.name,))
        buffers += [leaf, rival, new] if draw(st.booleans()) else [new, leaf]
    return buffers


@settings(max_examples=200, deadline=None)
@given(st.one_of(lifetimes(), lifetimes_with_resident_state()), st.sampled_from([1, 8, 64]))
def test_random_plans_are_valid_and_sized_between_the_bounds(buffers, alignment):
    plan = plan_memory(buffers, alignment)
    verify_plan(buffers, plan)
    assert all(offset % alignment == 0 for offset in plan.offsets.values())
    assert live_bytes_lower_bound(buffers, plan.aliases) <= plan.arena_bytes <= plan.naive_bytes
    assert plan_memory(list(buffers), alignment) == plan  # deterministic
    for b in buffers:
        if b.home is not None:  # every new value ends the step in its leaf's bytes
            assert plan.aliases[b.name] == b.home and plan.offsets[b.name] == plan.offsets[b.home]


@settings(max_examples=200, deadline=None)
@given(st.one_of(lifetimes(), lifetimes_with_resident_state()))
def test_the_lower_bound_is_the_most_bytes_live_at_any_kernel(buffers):
    """The bound's sweep against its definition, kernel by kernel: the live buffers' bytes, each in-place
    chain counted once at its largest live member."""
    aliases = plan_memory(buffers).aliases

    def head(name):
        while name in aliases:
            name = aliases[name]
        return name

    most = 0
    for t in range(min((b.first for b in buffers), default=0), max((b.last for b in buffers), default=-1) + 1):
        chains: dict = {}
        for b in buffers:
            if b.first <= t <= b.last:
                chains[head(b.name)] = max(chains.get(head(b.name), 0), b.nbytes)
        most = max(most, sum(chains.values()))
    assert live_bytes_lower_bound(buffers, aliases) == most


# --- size --------------------------------------------------------------------------------------------------


def test_two_thousand_buffers_plan_quickly_and_tightly():
    rng = random.Random(0)
    buffers = []
    for i in range(2000):
        first = rng.randrange(-1, 60)
        offered = tuple(rng.sample(range(2000), 3))
        buffers.append(Buffer(i, rng.randrange(1, 10**6), first, rng.randrange(first, 61), offered))
    start = time.perf_counter()
    plan = plan_memory(buffers)
    elapsed = time.perf_counter() - start
    verify_plan(buffers, plan)
    assert elapsed < 10  # about 0.15 s here; the bound only catches a slide into worse than O(n^2)
    assert plan.arena_bytes <= 1.1 * live_bytes_lower_bound(buffers, plan.aliases)


def first_fit(slots, alignment: int) -> dict:
    """The definition _place_greedy meets, checked the slow way: in order, each slot at the lowest aligned
    offset whose bytes no placed slot live at one of its kernels holds (such an offset is 0 or the aligned
    end of one of those)."""
    placed, offsets = [], {}
    for s in slots:
        rivals = [(start, end) for start, end, first, last in placed if first <= s.last and s.first <= last]
        candidates = sorted({0, *(_align(end, alignment) for _, end in rivals)})
        offsets[s.root] = next(c for c in candidates if all(c + s.nbytes <= a or b <= c for a, b in rivals))
        if s.nbytes:
            placed.append((offsets[s.root], offsets[s.root] + s.nbytes, s.first, s.last))
    return offsets


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


@settings(max_examples=100, deadline=None)
@given(lifetimes(), st.sampled_from([1, 8, 64]), st.sampled_from(range(len(memory.PLACEMENT_ORDERS))))
def test_each_placement_is_the_lowest_clear_offset_in_turn(buffers, alignment, order):
    alone = {b.name: b.name for b in buffers}  # every buffer its own slot
    slots = sorted(memory._slots(buffers, alone), key=memory.PLACEMENT_ORDERS[order])
    assert memory._place_greedy(slots, alignment) == first_fit(slots, alignment)


def deep_network(layers: int) -> list:
    """A deep MLP's training step, roughly: per layer a weight and its momentum live throughout, an activation
    kept from its forward kernel to its backward one, and a gradient that lives for one kernel."""
    end, buffers = 2 * layers + 1, []
    for i in range(layers):
        buffers += [Buffer(f"w{i}", 1024, -1, end), Buffer(f"m{i}", 1024, -1, end)]
        buffers += [Buffer(f"a{i}", 2048, i, end - 1 - i), Buffer(f"g{i}", 2048, end - 1 - i, end - i)]
    return buffers


def test_planning_a_deep_network_grows_about_as_n_log_n():
    """Four times the layers take about 5x the time (n log n), not 16x: a first fit that walks every placed
    buffer below its candidate walked the hundreds of parameters live throughout the step for every buffer
    (3.2 s of a 300-layer MLP's planning). Best of 3, alternating, so that a busy machine slows both alike."""
    small, large = deep_network(100), deep_network(400)
    seconds = {100: [], 400: []}
    for _ in range(3):
        for layers, buffers in ((100, small), (400, large)):
            start = time.perf_counter()
            plan = plan_memory(buffers)
            seconds[layers].append(time.perf_counter() - start)
    verify_plan(large, plan)
    assert plan.arena_bytes == live_bytes_lower_bound(large)
    assert min(seconds[400]) < 9 * min(seconds[100]), seconds
