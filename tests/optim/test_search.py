"""Tests of the update-program search: DSL typing, execution, simplification, hashing, mutation, evolution."""

import concurrent.futures
import copy

import numpy as np
import pytest
import torch

from gradlab.optim.search import (InvalidProgram, Program, ProgramOptimizer, ProxyTask, Statement, check_program,
                                  evaluate_on_task, execute, fingerprint, lion_program, mutate, mutate_valid,
                                  regularized_evolution, resolve_map, sgd_momentum_program, simplify, to_source)

S = Statement


def test_static_check_rejects_ill_typed_programs():
    check_program(sgd_momentum_program())
    check_program(lion_program())
    bad = [
        Program((S("sign", "u", ("t0",)),)),                              # temp read before written
        Program((S("interp", "m", ("m", "g"), 0.1),)),                    # never writes u
        Program((S("interp", "u", ("m", "g"), 1.5),)),                    # constant outside (0, 1)
        Program((S("clip", "u", ("g",), -1.0),)),                         # clip bound must be > 0
        Program((S("add", "u", ("g",)),)),                                # wrong arity
        Program((S("sign", "g", ("m",)), S("sign", "u", ("g",)))),        # writes a read-only input
        Program((S("frobnicate", "u", ("g",)),)),                         # unknown op
        Program((S("interp", "m", ("m", "w"), 0.1), S("scale", "u", ("m",), 1.0))),  # u ignores g
    ]
    for prog in bad:
        with pytest.raises(InvalidProgram):
            check_program(prog)
    # g reaches u only through the state carried to the next step: still valid
    check_program(Program((S("scale", "u", ("m",), 1.0), S("interp", "m", ("m", "g"), 0.1))))


def test_execute_lion_program_matches_lion_equations():
    torch.manual_seed(0)
    prog = lion_program(0.9, 0.99)
    w = torch.randn(5, dtype=torch.float64)
    m_ref = torch.zeros(5, dtype=torch.float64)
    state = {}
    for _ in range(6):
        g = torch.randn(5, dtype=torch.float64)
        u = execute(prog, g, w, state)
        ref = torch.sign(0.9 * m_ref + 0.1 * g)
        m_ref = 0.99 * m_ref + 0.01 * g
        torch.testing.assert_close(u, ref, rtol=0, atol=0)
        torch.testing.assert_close(state["m"], m_ref, rtol=1e-15, atol=1e-15)


def test_simplify_removes_dead_statements_but_keeps_state_read_next_step():
    prog = Program((
        S("scale", "u", ("m",), 1.0),          # reads m written at the end of the previous step
        S("square", "t0", ("g",)),             # dead: t0 never read
        S("interp", "v", ("v", "g"), 0.1),     # dead: v never reaches u
        S("interp", "m", ("m", "g"), 0.1),     # live through the next step
        S("sign", "t1", ("w",)),               # dead
    ))
    simple = simplify(prog)
    assert simple.statements == (prog.statements[0], prog.statements[3])
    assert simplify(simple) == simple
    assert simplify(lion_program()) == lion_program()
    # an overwritten value is dead
    prog2 = Program((S("sign", "u", ("g",)), S("scale", "u", ("g",), 2.0)))
    assert simplify(prog2).statements == (prog2.statements[1],)
    # interp(a, a, c) == a
    prog3 = Program((S("interp", "t0", ("g", "g"), 0.3), S("sign", "u", ("t0",))))
    assert simplify(prog3).statements[0] == S("scale", "t0", ("g",), 1.0)
    assert fingerprint(prog3) == fingerprint(Program((S("sign", "u", ("g",)),)))


def test_fingerprint_identifies_equivalent_programs_and_rejects_degenerate_ones():
    a = Program((S("add", "t0", ("g", "m")), S("interp", "m", ("m", "g"), 0.1), S("scale", "u", ("t0",), 1.0)))
    b = Program((S("add", "t0", ("m", "g")), S("interp", "m", ("m", "g"), 0.1), S("scale", "u", ("t0",), 3.0),
                 S("sign", "t2", ("w",))))
    assert fingerprint(a) == fingerprint(b)  # commuted args, positive rescaling, dead code
    assert fingerprint(sgd_momentum_program()) != fingerprint(lion_program())
    neg = Program((S("interp", "m", ("m", "g"), 0.1), S("scale", "u", ("m",), -1.0)))
    assert fingerprint(neg) != fingerprint(sgd_momentum_program())
    with pytest.raises(InvalidProgram, match="zero"):
        fingerprint(Program((S("sub", "u", ("g", "g")),)))


def test_mutations_are_valid_and_change_the_program():
    rng = np.random.default_rng(0)
    prog = sgd_momentum_program()
    kinds = set()
    for _ in range(60):
        child, key = mutate_valid(prog, rng, max_length=6)
        check_program(child, 6)
        assert key == fingerprint(child)
        kinds.add(np.sign(len(child) - len(prog)))
        prog = child
    assert kinds == {-1, 0, 1}  # inserts, deletes and modifications all happened
    raw = [mutate(sgd_momentum_program(), np.random.default_rng(i)) for i in range(30)]
    assert any(r != sgd_momentum_program() for r in raw)


def test_to_source_is_readable_python():
    text = to_source(lion_program())
    assert "u = sign(t0)" in text and "t0 = 0.9 * m + 0.1 * g" in text and "w = w - lr * u" in text
    ns = {"sign": torch.sign}
    exec(text, ns)  # the printed code runs and equals the interpreter
    w, g, m, v = (torch.tensor([0.5, -1.0]), torch.tensor([0.3, 0.2]), torch.tensor([-1.0, 0.1]), torch.zeros(2))
    w2, m2, _ = ns["update"](w, g, m, v, lr=0.1)
    state = {"m": m.clone(), "v": v.clone()}
    torch.testing.assert_close(w2, w - 0.1 * execute(lion_program(), g, w, state))
    torch.testing.assert_close(m2, state["m"])


def test_task_evaluation_vectorised_over_lrs_equals_one_lr_at_a_time():
    prog = lion_program()
    task = ProxyTask("mlp", n_features=4, n_classes=3, hidden=5, n_train=64, n_test=64, steps=8, batch_size=8,
                     lrs=(1e-3, 1e-2, 1e-1))
    joint = evaluate_on_task(prog, task)
    for lr, loss in zip(task.lrs, joint.losses):
        single = evaluate_on_task(prog, ProxyTask(**{**task.__dict__, "lrs": (lr,)}))
        assert single.loss == pytest.approx(loss, rel=1e-12)
    assert joint.loss == min(joint.losses)


def test_task_evaluation_matches_a_plain_torch_training_loop():
    task = ProxyTask("softmax", n_features=3, n_classes=2, n_train=32, n_test=16, steps=5, batch_size=4,
                     lrs=(0.1,), label_noise=0.0)
    sgd = Program((S("scale", "u", ("g",), 1.0),))
    from gradlab.optim.search.tasks import _data
    x, y, xt, yt, init = _data(task)
    W = init[:6].reshape(3, 2).clone().requires_grad_(True)
    b = init[6:].clone().requires_grad_(True)
    opt = torch.optim.SGD([W, b], lr=0.1)
    gen = torch.Generator().manual_seed(20_000 + task.seed)
    for _ in range(5):
        idx = torch.randint(0, 32, (4,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(x[idx] @ W + b, y[idx]).backward()
        opt.step()
    ref = torch.nn.functional.cross_entropy(xt @ W + b, yt).item()
    assert evaluate_on_task(sgd, task).loss == pytest.approx(ref, rel=1e-12)


def test_program_optimizer_foreach_equals_loop_and_lion_reference():
    torch.manual_seed(0)
    ws = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    a = [w.clone().requires_grad_(True) for w in ws]
    b = [w.clone().requires_grad_(True) for w in ws]
    prog = lion_program(0.9, 0.99)
    oa = ProgramOptimizer(a, prog, lr=0.01, weight_decay=0.1, foreach=False)
    ob = ProgramOptimizer(b, prog, lr=0.01, weight_decay=0.1, foreach=True)
    ref = [w.clone() for w in ws]
    mref = [torch.zeros_like(w) for w in ws]
    for t in range(5):
        grads = [torch.randn_like(w) for w in ws]
        for ps, o in ((a, oa), (b, ob)):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            o.step()
        for i, g in enumerate(grads):
            ref[i] = ref[i] * (1 - 0.01 * 0.1) - 0.01 * torch.sign(0.9 * mref[i] + 0.1 * g)
            mref[i] = 0.99 * mref[i] + 0.01 * g
    for pa, pb, r in zip(a, b, ref):
        assert torch.equal(pa, pb)
        torch.testing.assert_close(pa.detach(), r, rtol=0, atol=1e-15)
    o2 = ProgramOptimizer([p.detach().clone().requires_grad_(True) for p in a], prog, lr=0.01)
    o2.load_state_dict(copy.deepcopy(oa.state_dict()))
    assert o2.state[o2.param_groups[0]["params"][0]]["step"].item() == 5
    with pytest.raises(ValueError):
        ProgramOptimizer(a, prog, lr=-1.0)
    with pytest.raises(InvalidProgram):
        ProgramOptimizer(a, Program((S("sign", "u", ("w",)),)))


def test_resolve_map_accepts_executors_and_map_functions():
    assert resolve_map(None)(abs, [-1, 2]) == [1, 2]
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        assert resolve_map(ex)(abs, [-3]) == [3]
    assert list(resolve_map(lambda fn, items: [fn(i) for i in items])(abs, [-4])) == [4]
    with pytest.raises(TypeError):
        resolve_map(42)


def _tiny_funnel():
    return (ProxyTask("softmax", n_features=6, n_classes=3, n_train=256, n_test=256, steps=30, batch_size=16,
                      seed=1, lrs=tuple(10.0 ** (k / 2) for k in range(-6, 2))),)


def test_evolution_from_sgd_momentum_finds_a_better_program_with_any_executor():
    kwargs = dict(population_size=8, tournament_size=3, max_evaluations=96, batch_size=8, rng=0)
    res = regularized_evolution(_tiny_funnel(), **kwargs)
    assert res.seed.program == sgd_momentum_program()
    assert res.best.passed == 1 and res.best.ratios[0] < 1.0  # beats tuned SGD-momentum on the proxy task
    assert res.n_duplicates > 0 and res.n_evaluated + res.n_duplicates == res.n_proposed == 96
    assert [r for _, r in res.history] == sorted((r for _, r in res.history), reverse=True)
    check_program(res.best_program)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        res2 = regularized_evolution(_tiny_funnel(), executor=ex, **kwargs)
    assert res2.best.key == res.best.key and res2.best.ratios == res.best.ratios


def test_evolution_argument_errors():
    with pytest.raises(TypeError):
        regularized_evolution([])
    with pytest.raises(ValueError):
        regularized_evolution(_tiny_funnel(), population_size=4, tournament_size=5)


@pytest.mark.ray
def test_evolution_through_gradlab_local_and_ray_maps_equals_sequential():
    """The search's evaluations run through the same local-process / Ray backends as claims."""
    import ray

    from gradlab.core.parallel import make_map

    kwargs = dict(population_size=6, tournament_size=2, max_evaluations=16, batch_size=8, rng=3)
    ref = regularized_evolution(_tiny_funnel(), **kwargs)
    local = regularized_evolution(_tiny_funnel(), executor=make_map("local", 2), **kwargs)
    try:
        distributed = regularized_evolution(_tiny_funnel(), executor=make_map("ray", 2), **kwargs)
    finally:
        ray.shutdown()
    for res in (local, distributed):
        assert res.best.key == ref.best.key and res.best.losses == ref.best.losses
        assert res.n_evaluated == ref.n_evaluated
