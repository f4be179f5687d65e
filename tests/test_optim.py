"""LARS against a hand-written step."""

import torch

from hfssl.optim import LARS


def test_lars_step_matches_the_formula_and_skips_one_dimensional_parameters():
    torch.manual_seed(0)
    weight, bias = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4))
    weight.grad, bias.grad = torch.randn(4, 3), torch.randn(4)
    w0, b0, gw, gb = weight.detach().clone(), bias.detach().clone(), weight.grad.clone(), bias.grad.clone()
    optimizer = LARS([weight, bias], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    optimizer.step()
    update = gw + 0.1 * w0
    trust = 0.01 * w0.norm() / update.norm()
    torch.testing.assert_close(weight.detach(), w0 - 0.5 * trust * update)
    torch.testing.assert_close(bias.detach(), b0 - 0.5 * gb)
    w1 = weight.detach().clone()
    optimizer.step()  # momentum: buffer = 0.9 * first scaled update + second scaled update
    second = gw + 0.1 * w1
    buffer = 0.9 * trust * update + 0.01 * w1.norm() / second.norm() * second
    torch.testing.assert_close(optimizer.state[weight]["momentum_buffer"], buffer)
    torch.testing.assert_close(weight.detach(), w1 - 0.5 * buffer)
    torch.testing.assert_close(bias.detach(), b0 - 0.5 * gb - 0.5 * (0.9 * gb + gb))
