def test_bn_taylor_uses_batchnorm_parameters_and_their_squared_gradients(
        model, weights, scores, reference, close, following_bn):
    grad_sq = reference(5.0)["grad_sq"]
    expected = {}
    for weight, bn in following_bn.items():
        gamma, beta = model.get_submodule(bn).weight.detach(), model.get_submodule(bn).bias.detach()
        expected[weight] = (gamma ** 2 * grad_sq[f"{bn}.weight"]
                            + beta ** 2 * grad_sq[f"{bn}.bias"])
    close(scores("bn_taylor", "filter"), expected)
    close(scores("bn_taylor", "weight"),
          {n: s.view(-1, 1, 1, 1).expand_as(weights[n]) for n, s in expected.items()})
