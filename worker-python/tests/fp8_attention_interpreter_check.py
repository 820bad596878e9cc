"""Runs the Triton kernels of flexy_worker.fp8_attention under Triton's CPU interpreter and prints one
JSON line of measurements; test_fp8_attention.py starts it in a subprocess (TRITON_INTERPRET must be
set before Triton is imported, and it must not leak into the other tests)."""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import triton.runtime.interpreter as interpreter  # noqa: E402

from flexy_worker import fp8_attention as fa  # noqa: E402

# Triton 3.6's interpreter turns loop bounds into ints with int(np.array([n])), which NumPy >= 2.4
# refuses; take the single element instead (test harness only: the GPU path never runs this).
_patch_tensor = interpreter._patch_lang_tensor


def _patched(tensor, scope):
    _patch_tensor(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))


interpreter._patch_lang_tensor = _patched
torch.set_num_threads(1)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def exact(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


def kernel_cases() -> list[dict]:
    """Kernel against the PyTorch emulation of the same blockwise algorithm, and both against exact
    attention: both loaders, both head sizes, a token count that is not a multiple of the block, a
    batch of 2, K with a channel offset (smoothing), V strided as diffusers' fused projections give it."""
    results = []
    cases = [  # (tokens, head_dim, qk, pv, loader, (BLOCK_M, BLOCK_N, warps, stages))
        (200, 64, "fp8", "fp8", "ptr", (64, 64, 4, 1)),
        (200, 64, "int8", "bf16", "ptr", (64, 64, 4, 1)),
        (256, 128, "int8", "fp8", "tma", (64, 64, 4, 1)),
        (200, 128, "fp8", "bf16", "tma", (64, 128, 4, 1)),
    ]
    for seq, dim, qk, pv, loader, config in cases:
        g = torch.Generator().manual_seed(seq + dim)
        q = torch.randn(2, seq, 2, dim, generator=g).to(torch.bfloat16)
        k = (torch.randn(2, seq, 2, dim, generator=g) + 2 * torch.randn(1, 1, 2, dim, generator=g)).to(torch.bfloat16)
        fused = torch.randn(2, seq, 3, 2, dim, generator=g).to(torch.bfloat16)
        v = fused[:, :, 1]  # a strided view, as a chunk of a fused projection is
        out = fa.fp8_attention(q, k, v, qk=qk, pv=pv, loader=loader, config=config)
        emu = fa.reference_fp8_attention(q, k, v, qk=qk, pv=pv, block_n=config[1])
        results.append({"case": f"S={seq} D={dim} qk={qk} pv={pv} {loader}", "shape_ok": list(out.shape) == list(q.shape),
                        "finite": bool(torch.isfinite(out).all()), "kernel_vs_emulation": rel(out, emu),
                        "kernel_vs_exact": rel(out, exact(q, k, v)), "emulation_vs_exact": rel(emu, exact(q, k, v))})  # fmt: skip
    return results


def model_case() -> dict:
    """A tiny FLUX.2 (head_dim 64) in bf16 routed through the kernel: processors tagged, the kernel
    called once per block, the output close to the unrouted one, one graph and no graph break
    under Dynamo, the custom op's schema and fake implementation checked by opcheck."""
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(3)
    model = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=64,
        num_attention_heads=2, joint_attention_dim=32, timestep_guidance_channels=16, mlp_ratio=3.0,
        axes_dims_rope=(16, 16, 16, 16), guidance_embeds=True,
    ).eval().to(torch.bfloat16)  # fmt: skip
    g = torch.Generator().manual_seed(4)
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(8.0), torch.arange(8.0), torch.zeros(1), indexing="ij"), -1)
    inputs = {"hidden_states": torch.randn(1, 64, 16, generator=g).to(torch.bfloat16),
              "encoder_hidden_states": torch.randn(1, 8, 32, generator=g).to(torch.bfloat16),
              "timestep": torch.tensor([0.5]), "guidance": torch.tensor([4.0]), "img_ids": ids.reshape(-1, 4),
              "txt_ids": torch.zeros(8, 4), "return_dict": False}  # fmt: skip
    calls = {"n": 0}
    original = fa.fp8_attention

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    with torch.no_grad():
        ref = model(**inputs)[0]
        fa._ALLOW_CPU["value"] = True  # the interpreter runs the kernel on CPU tensors
        fa.fp8_attention = counting
        routed = fa.install(model, "int8qk")
        out = model(**inputs)[0]
        calls_eager = calls["n"]
        explain = torch._dynamo.explain(model.forward)(**inputs)
        fa.uninstall(model)
        back = model(**inputs)[0]
    fa.fp8_attention = original
    q = torch.randn(1, 70, 2, 64).to(torch.bfloat16)
    opcheck = torch.library.opcheck(fa.fp8_attention_op, (q, q.clone(), q.clone(), 0.0, "fp8"))
    return {"routed": routed, "calls_eager": calls_eager, "rel_vs_unrouted": rel(out, ref), "graph_breaks": explain.graph_break_count,
            "graphs": explain.graph_count, "restored_exactly": bool(torch.equal(back, ref)), "opcheck": opcheck}  # fmt: skip


if __name__ == "__main__":
    assert fa.interpreting(), "TRITON_INTERPRET did not take"
    print("RESULT " + json.dumps({"kernels": kernel_cases(), "model": model_case()}), flush=True)
    sys.exit(0)
