from fp_builtins.measures.grasp import Grasp


def test_grasp_is_signed_weight_times_hessian_gradient(weights, scores, reference, close,
                                                       filter_sum):
    hess_grad = reference(200.0)["hess_grad"]  # GraSP's default T
    expected = {n: w * hess_grad[n] for n, w in weights.items()}
    close(scores("grasp", "weight"), expected)
    close(scores("grasp", "filter"), {n: filter_sum(s) for n, s in expected.items()})


def test_grasp_scores_keep_their_sign(scores):
    values = scores("grasp", "filter", temperature=1.0)
    signs = {int(v) for s in values.values() for v in s.sign()}
    assert {-1, 1} <= signs


def test_grasp_default_temperature_is_200():
    assert Grasp().temperature == 200.0
    assert Grasp(temperature=3.0).temperature == 3.0
