"""Small random models of the real diffusers classes, shared by the tests that need one in memory."""

from __future__ import annotations


def tiny_flux2_transformer(head_dim: int = 16):
    """A FLUX.2 transformer of one double and two single blocks, seeded (3): the same weights on every
    call. RoPE splits each head's dims over four axes."""
    import torch
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(3)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=head_dim,
        num_attention_heads=2, joint_attention_dim=32, timestep_guidance_channels=16, mlp_ratio=3.0,
        axes_dims_rope=(head_dim // 4,) * 4, guidance_embeds=True,
    ).eval()  # fmt: skip
