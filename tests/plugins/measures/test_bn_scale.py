def test_bn_scale_is_abs_gamma_of_following_batchnorm(model, weights, scores, close,
                                                      following_bn):
    gammas = {w: model.get_submodule(bn).weight.detach().abs() for w, bn in following_bn.items()}
    assert any((model.get_submodule(bn).weight < 0).any() for bn in following_bn.values())
    close(scores("bn_scale", "filter"), gammas)  # fc has no following BatchNorm: left out
    close(scores("bn_scale", "weight"),
          {n: g.view(-1, 1, 1, 1).expand_as(weights[n]) for n, g in gammas.items()})
