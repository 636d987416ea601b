"""SASRec encoder: empty histories, padding invariance, window, user embedding."""

from __future__ import annotations

import torch

from policy.checkpoint import build_network
from policy.config import PolicyConfig
from policy.sasrec import SASRecEncoder

CFG = PolicyConfig(num_items=20, max_len=5, hidden=16, heads=2, blocks=2, num_users=4)


def _encoder() -> SASRecEncoder:
    enc = build_network(CFG, seed=0).encoder
    enc.eval()
    return enc


def test_start_token_sits_before_the_first_item() -> None:
    enc = _encoder()
    tokens = enc.tokens(torch.tensor([[-1, -1, 4], [-1, -1, -1], [0, 1, 2]]))
    start = CFG.num_items + 1
    assert tokens.shape == (3, 4)  # all-padding columns on the left are dropped
    assert tokens[0, -2:].tolist() == [start, 5] and (tokens[0, :-2] == 0).all()
    assert tokens[1, -1].item() == start and (tokens[1, :-1] == 0).all()
    assert tokens[2, -4:].tolist() == [start, 1, 2, 3]


def test_states_are_finite_and_ignore_extra_padding() -> None:
    enc = _encoder()
    with torch.no_grad():
        short = enc(torch.tensor([[-1, 3, 7], [-1, -1, -1]]))
        wide = enc(torch.tensor([[-1, -1, -1, -1, 3, 7], [-1, -1, -1, -1, -1, -1]]))
    assert short.shape == (2, CFG.hidden) and torch.isfinite(short).all()
    torch.testing.assert_close(short, wide)
    assert not torch.allclose(short[0], short[1])


def test_a_state_does_not_depend_on_its_batch_mates() -> None:
    enc = _encoder()
    with torch.no_grad():
        alone = enc(torch.tensor([[-1, -1, -1, 3, 7]]))
        batched = enc(torch.tensor([[-1, -1, -1, 3, 7], [1, 2, 3, 4, 5]]))
    torch.testing.assert_close(alone[0], batched[0])


def test_only_the_last_max_len_items_matter() -> None:
    enc = _encoder()
    with torch.no_grad():
        a = enc(torch.tensor([[9, 1, 2, 3, 4, 5]]))
        b = enc(torch.tensor([[0, 1, 2, 3, 4, 5]]))
        c = enc(torch.tensor([[0, 1, 2, 3, 4, 6]]))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_user_embedding_personalises_the_empty_state() -> None:
    enc = _encoder()
    empty = torch.full((3, 2), -1)
    with torch.no_grad():
        s = enc(empty, torch.tensor([0, 1, 50]))
        unknown = enc(empty[:1], torch.tensor([-7]))
    assert not torch.allclose(s[0], s[1])
    torch.testing.assert_close(s[2:], unknown)  # every out-of-range id shares one row


def test_older_items_change_the_state() -> None:
    enc = _encoder()
    with torch.no_grad():
        base = enc(torch.tensor([[-1, -1, 1, 2]]))
        other = enc(torch.tensor([[-1, -1, 3, 2]]))
    assert not torch.allclose(base, other)


def test_tied_heads_score_items_with_their_input_embeddings() -> None:
    cfg = PolicyConfig(num_items=12, max_len=4, hidden=8, heads=2, blocks=1, tied_heads=True)
    net = build_network(cfg, seed=0)
    net.eval()
    hist = torch.tensor([[-1, 2, 3]])
    with torch.no_grad():
        logits, q = net(hist)
        assert logits.shape == q.shape == (1, 12)
        net.encoder.item_emb.weight[1 + 7] += 1.0  # item 7 is not in the history
        logits2, q2 = net(hist)
    changed = (logits2 - logits).abs()[0] > 1e-7
    assert changed.tolist() == [i == 7 for i in range(12)]
    assert (q2 - q).abs()[0, 7] > 1e-7
    # The shared embedding is stored once.
    assert not any(k.startswith(("actor.score._item", "critic.score._item"))
                   for k in net.state_dict())
