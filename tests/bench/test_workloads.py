"""Built-in workloads: deterministic data and models, the input queue, evaluation and targets."""

import math

import pytest
import torch

from gradlab.bench.workloads import BUILTIN_WORKLOADS, TinyLM, make_shapes, sample_markov, markov_chain


@pytest.mark.parametrize("name", list(BUILTIN_WORKLOADS))
def test_workload_is_deterministic_and_evaluates(name):
    torch.set_num_threads(1)
    a, b = BUILTIN_WORKLOADS[name](), BUILTIN_WORKLOADS[name]()
    for ta, tb in zip(a.data, b.data):
        assert torch.equal(ta, tb)
    ma, mb = a.init_model(5), b.init_model(5)
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters()))
    ma.train()
    res = a.evaluate(ma)
    assert ma.training and math.isfinite(res["loss"]) and math.isfinite(res["metric"])
    assert not a.has_reached_target(res["metric"])  # an untrained model is not at the target
    assert a.max_steps >= a.step_hint and a.eval_period_steps >= 1
    x, y = next(a.input_queue(16, 0))
    assert x.shape[0] == 16 and y.shape[0] == 16
    assert torch.isfinite(a.loss(ma(x), y))


def test_input_queue_visits_each_example_once_per_epoch():
    wl = BUILTIN_WORKLOADS["teacher_regression"]()
    n, bs = wl.num_train_examples, 100
    q = wl.input_queue(bs, 3)
    seen = torch.cat([next(q)[0] for _ in range(n // bs)])
    assert torch.equal(seen[seen[:, 0].argsort()], wl.data[0][wl.data[0][:, 0].argsort()])
    q2 = wl.input_queue(bs, 3)
    assert torch.equal(next(q2)[0], next(wl.input_queue(bs, 3))[0])


def test_target_direction():
    acc, mse = BUILTIN_WORKLOADS["digits_mlp"](), BUILTIN_WORKLOADS["teacher_regression"]()
    assert acc.has_reached_target(acc.validation_target) and not acc.has_reached_target(acc.validation_target - 0.01)
    assert mse.has_reached_target(mse.validation_target) and not mse.has_reached_target(mse.validation_target + 0.01)
    assert not acc.has_reached_target(float("nan"))


def test_generators():
    x, y = make_shapes(400, 0)
    assert x.shape == (400, 1, 12, 12) and set(y.tolist()) == {0, 1, 2, 3}
    table = markov_chain(8, 0)
    torch.testing.assert_close(table.sum(-1), torch.ones(8, 8))
    seq = sample_markov(table, 50, 10, 0)
    assert seq.shape == (50, 10) and int(seq.max()) < 8
    lm = TinyLM()
    assert 0 < lm.entropy_rate() < lm.validation_target < math.log(8)  # learnable, below the unigram bound


def test_bad_workload_inputs():
    wl = BUILTIN_WORKLOADS["digits_mlp"]()
    with pytest.raises(ValueError, match="batch_size"):
        wl.input_queue(0, 0)
    with pytest.raises(TypeError, match="seed"):
        wl.init_model(1.5)
    with pytest.raises(ValueError, match="n"):
        make_shapes(0, 0)


def test_make_graphs_labels_match_networkx():
    import networkx as nx

    from gradlab.bench.workloads import GraphGNN, make_graphs

    n, e, k = GraphGNN.n_nodes, GraphGNN.n_edges, GraphGNN.n_types
    x, y = make_graphs(40, 5)
    assert x.shape == (40, n * k + 2 * e) and y.shape == (40, 4)
    for g in range(40):
        edges = x[g, n * k:].long().reshape(e, 2).tolist()
        G = nx.Graph()
        G.add_nodes_from(range(n))
        G.add_edges_from(edges)
        assert G.number_of_edges() == e  # distinct edges
        assert bool(y[g, 0]) == (sum(nx.triangles(G).values()) > 0)
        assert bool(y[g, 1]) == (max(d for _, d in G.degree()) >= 4)


def test_graph_gnn_is_permutation_invariant_and_its_map_matches_sklearn():
    from sklearn.metrics import average_precision_score

    from gradlab.bench.workloads import GraphGNN, mean_average_precision

    wl = GraphGNN()
    model = wl.init_model(0)
    x = wl.data[2][:8]
    n, e, k = wl.n_nodes, wl.n_edges, wl.n_types
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    inv = torch.argsort(perm)
    feats = x[:, :n * k].reshape(8, n, k)[:, perm].reshape(8, -1)  # node i of the new graph is old node perm[i]
    edges = inv[x[:, n * k:].long()].float()
    with torch.no_grad():
        torch.testing.assert_close(model(torch.cat([feats, edges], 1)), model(x), atol=1e-5, rtol=1e-5)
    s = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    lab = (torch.rand(50, 4, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    ref = sum(average_precision_score(lab[:, j].numpy(), s[:, j].numpy()) for j in range(4)) / 4
    assert abs(mean_average_precision(s, lab) - ref) < 1e-12


def test_make_graphs_bad_input():
    from gradlab.bench.workloads import make_graphs

    with pytest.raises(ValueError, match="n_graphs"):
        make_graphs(0, 0)
