"""The engine's sampler and stop-string handling, on made-up logits."""
import numpy as np

from router.engine import Sampling, first_stop, held_back, sample

LOGITS = np.array([0.0, 3.0, 2.9, -1.0, 1.0])


def test_temperature_zero_is_greedy():
    rng = np.random.default_rng(0)
    assert {sample(LOGITS, Sampling(max_tokens=1, temperature=0), rng) for _ in range(20)} == {1}


def test_top_p_keeps_only_the_nucleus():
    rng = np.random.default_rng(0)
    picks = {sample(LOGITS, Sampling(max_tokens=1, temperature=1.0, top_p=0.5), rng) for _ in range(200)}
    assert picks == {1, 2}  # token 1 alone holds under half of the mass; 1 and 2 together hold more


def test_a_seed_repeats_the_same_choices():
    runs = [[sample(LOGITS, Sampling(max_tokens=1, temperature=1.5), rng) for _ in range(50)]
            for rng in (np.random.default_rng(7), np.random.default_rng(7))]
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


def test_stop_strings():
    assert first_stop("Hello world", ("wor", "xyz")) == 6
    assert first_stop("Hello", ("xyz",)) is None
    assert held_back("The capital is Pa", ("Paris",)) == 2
    assert held_back("The capital is P", ("Paris", "Q")) == 1
    assert held_back("The capital is", ("Paris",)) == 0
