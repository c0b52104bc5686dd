"""transformer_iwslt_de_en in torch: fairseq's shapes, positions, init, incremental decoding, loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_transformer

from radam_repro.models.transformer import Transformer, TransformerConfig, sinusoidal_positions
from radam_repro.tasks.translation import label_smoothed_nll_loss

torch.set_num_threads(1)
PAD = 1


def batch():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 40, (3, 7), generator=g)
    src[:, -1] = 2
    src[0, 4:] = PAD  # a shorter sentence, right-padded
    src[0, 3] = 2
    prev = torch.randint(4, 50, (3, 6), generator=g)
    prev[:, 0] = 2
    return src, prev


def test_sinusoidal_positions_follow_fairseq():
    """Positions count from padding_idx + 1; P[p] = [sin(p w), cos(p w)], w_i = 10000^(-i/(d/2-1)); padding -> 0."""
    tokens = torch.tensor([[PAD, PAD, 7, 8], [7, 8, PAD, PAD]])
    emb = sinusoidal_positions(tokens, 4, PAD)
    w = torch.tensor([1.0, 1e-4])
    for p, column in ((2, 2), (3, 3)):
        expected = torch.cat([torch.sin(p * w), torch.cos(p * w)])
        torch.testing.assert_close(emb[0, column], expected)  # left-padded
        torch.testing.assert_close(emb[1, column - 2], expected)  # right-padded: same positions
    assert emb[0, :2].abs().sum() == 0 and emb[1, 2:].abs().sum() == 0


def test_iwslt_parameter_count_matches_fairseq():
    """On the IWSLT'14 dictionaries (8848 de / 6632 en types, as fairseq-preprocess logs them): embeddings
    8848·512 + 6632·512, six encoder layers of 4·512²+4·512 (attention) + 2·512·1024+1024+512 (FFN) + 2·2·512
    (LayerNorms) = 2,102,784 and six decoder layers with a second attention and LayerNorm = 3,154,432:
    39,469,056 with --share-decoder-input-output-embed, one 6632 x 512 output matrix more without."""
    shared = Transformer(
        TransformerConfig(src_vocab_size=8848, tgt_vocab_size=6632, share_decoder_input_output_embed=True)
    )
    assert 8848 * 512 + 6632 * 512 + 6 * 2_102_784 + 6 * 3_154_432 == 39_469_056
    assert sum(p.numel() for p in shared.parameters()) == 39_469_056
    separate = Transformer(TransformerConfig(src_vocab_size=8848, tgt_vocab_size=6632))
    assert sum(p.numel() for p in separate.parameters()) == 39_469_056 + 6632 * 512


def test_initialisation_is_fairseqs():
    model = Transformer(TransformerConfig(src_vocab_size=1000, tgt_vocab_size=1200, d_model=256, ffn_dim=512))
    d = 256
    for embedding in (model.encoder_embed.weight, model.decoder_embed.weight, model.output_weight):
        assert embedding.std().item() == pytest.approx(d**-0.5, rel=0.03)
    assert model.encoder_embed.weight[PAD].abs().sum() == 0 and model.decoder_embed.weight[PAD].abs().sum() == 0
    attn = model.encoder_layers[0].self_attn
    bound = math.sqrt(6 / (d + 3 * d))  # xavier-uniform of the packed 3d x d matrix
    assert attn.in_proj_weight.abs().max() <= bound and attn.in_proj_weight.abs().max() > 0.95 * bound
    ffn = model.decoder_layers[0].ffn.fc1
    assert ffn.weight.abs().max() <= math.sqrt(6 / (d + 512))
    for bias in (attn.in_proj_bias, attn.out_proj.bias, ffn.bias):
        assert bias.abs().sum() == 0


@pytest.mark.parametrize("pre_norm", [False, True])
def test_incremental_decoding_equals_full_decoding(pre_norm):
    model = tiny_transformer(pre_norm=pre_norm)
    src, prev = batch()
    full = model(src, prev)
    encoder, cache = model.encode(src), model.new_cache()
    steps = torch.cat([model.decode(prev[:, : t + 1], encoder, cache) for t in range(prev.size(1))], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_source_padding_does_not_change_the_output():
    model = tiny_transformer()
    src, prev = batch()
    padded = torch.cat([src, torch.full((3, 4), PAD)], dim=1)
    torch.testing.assert_close(model(padded, prev), model(src, prev), atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    model = tiny_transformer()
    src, prev = batch()
    changed = prev.clone()
    changed[:, 4:] = 5
    torch.testing.assert_close(model(src, changed)[:, :4], model(src, prev)[:, :4])


def test_pre_norm_adds_final_layer_norms_and_post_norm_ends_normalised():
    post, pre = tiny_transformer(pre_norm=False), tiny_transformer(pre_norm=True)
    src, _ = batch()
    assert isinstance(pre.encoder_norm, torch.nn.LayerNorm) and isinstance(pre.decoder_norm, torch.nn.LayerNorm)
    assert not isinstance(post.encoder_norm, torch.nn.LayerNorm)
    out = post.encode(src).out  # post-LN: the last op of every layer is a LayerNorm (weight 1, bias 0)
    torch.testing.assert_close(out.mean(-1), torch.zeros(out.shape[:2]), atol=1e-5, rtol=0)


def test_embedding_sharing():
    shared = tiny_transformer(share_decoder_input_output_embed=True)
    assert shared.output_weight is shared.decoder_embed.weight
    joint = Transformer(
        TransformerConfig(src_vocab_size=40, tgt_vocab_size=40, d_model=32, ffn_dim=64, share_all_embeddings=True)
    )
    assert joint.encoder_embed is joint.decoder_embed and joint.output_weight is joint.decoder_embed.weight
    with pytest.raises(ValueError, match="joined dictionary"):
        Transformer(TransformerConfig(src_vocab_size=40, tgt_vocab_size=50, share_all_embeddings=True))


def test_label_smoothed_loss_matches_torch_cross_entropy():
    """fairseq v0.8: (1-eps)·nll + eps/V·sum(-log p) over non-padding tokens == torch's label smoothing."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 11, generator=g)
    target = torch.randint(4, 11, (4, 6), generator=g)
    target[0, 3:] = PAD
    loss, nll = label_smoothed_nll_loss(logits, target, 0.1)
    flat_logits, flat_target = logits.view(-1, 11), target.view(-1)
    expected = F.cross_entropy(flat_logits, flat_target, ignore_index=PAD, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll, F.cross_entropy(flat_logits, flat_target, ignore_index=PAD, reduction="sum"))
