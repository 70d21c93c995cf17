from evals.experiments.serving_queue import simulate


def test_simulation_counts_padding_and_waiting():
    # two batches of two: [5, 1] then [2, 2]
    m = simulate([5, 1, 2, 2], batch_size=2)
    assert m["padding_tokens"] == 4 and m["makespan_steps"] == 7
    assert m["mean_wait_steps"] == (5 + 1 + 7 + 7) / 4
    assert simulate([5, 1, 5, 1], 2)["padding_tokens"] == 8 and simulate([1, 1, 5, 5], 2)["padding_tokens"] == 0
